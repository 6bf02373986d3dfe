"""Command-line options declared once: the same `Option` builds the argparse argument and checks the value read
back from a run's config.json, so a bad value gets the same message (naming the option, the value and what was
expected) whether it was typed or edited into the file."""

import argparse
import dataclasses
import math
from collections.abc import Callable
from typing import Any


class UsageError(Exception):
    """A bad option value, run folder or config found after parsing; reported like argparse's errors (exit 2)."""


def check_unet_levels(c: dict, image_size: int) -> None:
    """The U-Net's `--channels` (multiples of 8, one per level, image size divisible by 2^(levels - 1)) and
    `--attention` (resolutions among the levels' sizes) for square images of `image_size`; shared by the families."""
    factor = 2 ** (len(c["channels"]) - 1)
    if not c["channels"] or image_size % factor or any(ch % 8 for ch in c["channels"]):
        raise UsageError(
            f"--channels {','.join(map(str, c['channels']))}: needs multiples of 8, one per level, with "
            f"image size {image_size} divisible by 2^(levels - 1)"
        )
    sizes = [image_size // 2**i for i in range(len(c["channels"]))]
    if any(r not in sizes for r in c["attention"]):
        raise UsageError(f"--attention {','.join(map(str, c['attention']))}: resolutions must be among {sizes}")


# ---------------------------------------------------------------------------------------------------------------
# argparse types: every bad value names the value and what was expected (argparse adds "argument --x:").
# Each carries `kind` (the Python type of a valid value), used to check config.json values.
def _number(convert, ok, expected: str):
    """An argparse type: `convert` the string, then require `ok(value)`; the error names the value."""

    def parse(s: str):
        try:
            v = convert(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {s!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {s!r}")
        return v

    parse.kind = convert
    parse.expected = expected
    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
nonneg_float = _number(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
decay = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
finite_float = _number(float, math.isfinite, "a finite number")
bits = _number(int, lambda v: 1 <= v <= 16, "a bit depth in 1..16")


def int_list(s: str) -> list[int]:
    if s.strip() == "":
        return []
    try:
        v = [int(p) for p in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {s!r}") from None
    if any(p < 1 for p in v):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {s!r}")
    return v


int_list.kind = list
int_list.expected = "comma-separated positive integers"


def flag(key: str) -> str:
    """The command-line flag of a config key: `batch_size` -> `--batch-size`."""
    return "--" + key.replace("_", "-")


def shown(v: Any) -> str:
    """A value as it would be typed on the command line."""
    return ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)


_OWN = object()


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: config key, default, help text, argparse `type` (None: a string) and `choices`.

    `default_text` replaces the shown default (for defaults resolved later, e.g. from the data). `switch`: an
    on/off flag (`--x` sets True), whose default is False.
    """

    key: str
    default: Any
    help: str
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    default_text: str | None = None
    switch: bool = False

    def add_to(self, group, *, suppress: bool = False, default: Any = _OWN, default_text: str | None = None) -> None:
        """Add to an argparse (group of a) parser. `suppress`: the option is absent from the namespace unless
        given (so that "given" can be told from "left at the default"); `default`: the namespace's value when
        not given, instead of the option's own default. The help shows the option's default either way."""
        text = default_text or self.default_text or shown(self.default)
        if self.switch:
            kw: dict[str, Any] = dict(help=self.help.replace("%", "%%"), action="store_true")
            kw["default"] = argparse.SUPPRESS if suppress else self.default
            group.add_argument(flag(self.key), **kw)
            return
        kw = dict(help=f"{self.help} (default: {text})".replace("%", "%%"))
        if self.type is not None:
            kw["type"] = self.type
        if self.choices is not None:
            kw["choices"] = list(self.choices)
            kw["metavar"] = "{" + ",".join(self.choices) + "}"
        kw["default"] = argparse.SUPPRESS if suppress else (self.default if default is _OWN else default)
        group.add_argument(flag(self.key), **kw)

    def check(self, value: Any) -> Any:
        """A config.json value for this option: returns it, or raises `ValueError` saying what was expected."""
        if self.switch:
            if not isinstance(value, bool):
                raise ValueError(f"{self.key} = {value!r}: expected true or false (as for {flag(self.key)})")
            return value
        kind = getattr(self.type, "kind", float if self.type is float else str)
        expected = getattr(self.type, "expected", {float: "a number", str: "a string"}.get(kind))
        if self.choices is not None:
            expected = "one of " + ", ".join(self.choices)
        if kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif kind is list:
            ok = isinstance(value, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in value)
        else:
            ok = isinstance(value, str)
        if ok and self.type is not None:
            try:
                self.type(shown(value))
            except argparse.ArgumentTypeError:
                ok = False
        if ok and self.choices is not None:
            ok = value in self.choices
        if not ok:
            raise ValueError(f"{self.key} = {value!r}: expected {expected} (as for {flag(self.key)})")
        return float(value) if kind is float else value


# ---------------------------------------------------------------------------------------------------------------
# Options of `train` that every model family takes (each family adds its own in its module).
def _data_help() -> str:
    from .. import data as sfd

    return (
        "'digits' (built in: sklearn 8x8, 17 levels), 'digits-binary' (the same, binarised at level 8), "
        "'text' (characters of the Python reference manual, text8 alphabet; --model d3pm), 'text8:PATH' (a "
        "local text8 file; --model d3pm), "
        "'toy:NAME' (2-D mixture with exact density: " + ", ".join(sorted(sfd.TOY_MIXTURES)) + "), a "
        ".npy/.npz file of integer images/vectors, or a folder of PNG images"
    )


COMMON_DATA = (
    Option("data", "digits", _data_help()),
    Option("bits", 8, "bit depth of --data files/PNGs", bits),
)
COMMON_NETWORK = (
    Option("channels", [32, 64], "U-Net channels per level, e.g. 32,64", int_list),
    Option("res_blocks", 1, "U-Net residual blocks per level", positive_int),
    Option("attention", [], "U-Net resolutions with self-attention, e.g. 4", int_list, default_text="none"),
    Option("dropout", 0.0, "U-Net dropout rate in [0, 1)", decay),
    Option("width", 128, "MLP width; with --model d3pm on sequences, the transformer's width", positive_int),
    Option("depth", 3, "MLP residual blocks; with --model d3pm on sequences, transformer blocks", positive_int),
)
COMMON_OPTIMISATION = (
    Option("steps", 2000, "training steps", positive_int),
    Option("batch_size", 64, "examples per micro-batch, divisible by the device count", positive_int),
    Option("accumulate", 1, "micro-batches per step (gradient accumulation)", positive_int),
    Option("lr", 3e-3, "peak learning rate of AdamW, warm-up then cosine", positive_float),
    Option("warmup", 100, "warm-up steps", nonneg_int),
    Option("clip", 1.0, "global gradient-norm clip", positive_float),
    Option("ema_decay", 0.995, "EMA decay in [0, 1)", decay),
    Option("seed", 0, "seed of initialisation, data order and noise", nonneg_int),
)
COMMON_RUN = (
    Option("log_every", 25, "steps between metrics lines", positive_int),
    Option("checkpoint_every", 500, "steps between checkpoints", positive_int),
    Option("keep", 3, "checkpoints kept", positive_int),
)
COMMON_EVAL = (Option("num_samples", 64, "samples drawn for samples.png", positive_int),)
COMMON = COMMON_DATA + COMMON_NETWORK + COMMON_OPTIMISATION + COMMON_RUN + COMMON_EVAL
"""Every option of `train` shared by the model families, in the order of `--help`."""
