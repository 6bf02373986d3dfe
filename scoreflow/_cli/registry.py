"""The one registry of model families (`--model NAME`). Each family module defines a final `AbstractFamily`
subclass and calls `register` on an instance at import; `main.py` imports the family modules, so the commands
(`train`, `sample`, `nll`, `info`) find every family here without importing any of them."""

import abc
import argparse

from .options import COMMON, Option, UsageError, flag, shown


class AbstractFamily(abc.ABC):
    """A kind of model the CLI trains, samples and evaluates.

    **Attributes:** `name` (the `--model` value), `title` (for messages), `help` (one line for `--help`),
    `train_options` (the `Option`s of `train` that only this family uses), `sample_options` and `nll_options`
    (the same for `sample RUN` and `nll RUN`: default None, meaning "as the run was trained"), `model_keys`
    (the config keys that define the trained function; bound to every checkpoint), `is_default` (the family of
    `--model`'s default; exactly one has it, so the default does not depend on the order of imports).
    """

    is_default: bool = False
    name: str
    title: str
    help: str
    train_options: tuple[Option, ...] = ()
    sample_options: tuple[Option, ...] = ()
    nll_options: tuple[Option, ...] = ()
    model_keys: tuple[str, ...] = ()

    @abc.abstractmethod
    def config_keys(self) -> tuple[str, ...]:
        """Every key of this family's config (what config.json's "config" holds)."""

    @abc.abstractmethod
    def config_from_args(self, a: argparse.Namespace) -> dict:
        """A new run's config from `train`'s parsed options (this family's options left out are defaults)."""

    @abc.abstractmethod
    def run_tag(self, c: dict) -> str:
        """The middle of a default run folder's name, `runs/<data>-<tag>-<time>`."""

    def check_config(self, c: dict) -> dict:
        """Check a config read back from config.json with the rules of the command-line options; returns it
        (numbers made floats where floats are expected). Raises `ValueError` naming the key and the problem."""
        options = {o.key: o for o in (*COMMON, *self.train_options)}
        out = dict(c)
        for k in self.config_keys():
            if k in options:
                if k not in c:
                    raise ValueError(f"{k} is missing")
                out[k] = options[k].check(c[k])
        return out

    @abc.abstractmethod
    def train(self, a: argparse.Namespace, session) -> int:
        """`scoreflow train --model NAME` (also `--resume` of such a run). Returns the exit code."""

    @abc.abstractmethod
    def sample(self, a: argparse.Namespace, run, interrupts) -> int:
        """`scoreflow sample RUN` for a run of this family."""

    @abc.abstractmethod
    def nll(self, a: argparse.Namespace, run, interrupts) -> int:
        """`scoreflow nll RUN` for a run of this family."""


FAMILIES: dict[str, AbstractFamily] = {}


def register(family: AbstractFamily) -> AbstractFamily:
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def default() -> AbstractFamily:
    """The family `train` uses when `--model` is not given."""
    found = [f for f in FAMILIES.values() if f.is_default]
    if len(found) != 1:
        raise RuntimeError(f"exactly one model family must be the default; found {[f.name for f in found]}")
    return found[0]


def get(name: str) -> AbstractFamily:
    if name not in FAMILIES:
        raise UsageError(f"unknown model family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def refuse_foreign(a: argparse.Namespace, family: AbstractFamily, attribute: str, what: str) -> None:
    """Options of other families' `attribute` that were given: an error naming the option, value and family."""
    for other in FAMILIES.values():
        if other is family:
            continue
        for o in getattr(other, attribute):
            v = getattr(a, o.key, None)
            if v is not None:
                raise UsageError(f"{flag(o.key)} {shown(v)} does not apply to {what} (it is for --model {other.name})")
