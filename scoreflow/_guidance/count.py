r"""Evaluations per model: how often each score model inside a composed one (e.g. a `Guided`'s main and reference)
is actually evaluated by a sampler or a likelihood computation."""

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Conditioning, ScalarLike
from .._model import AbstractScoreModel
from .._sde import AbstractSDE


_Out = TypeVar("_Out")


class _Tally:
    """A host-side counter; hashed by identity, so it can be a static field."""

    def __init__(self):
        self.count = 0

    def add(self, *_):
        self.count += 1


class _Counted(AbstractScoreModel):
    """`model`, with each evaluation counted on the host (a `jax.debug.callback` on `(t, x, cond)`, so that under
    `vmap` it fires once per example and for both branches of a `cond` turned into a `select`)."""

    model: AbstractScoreModel
    tally: _Tally = eqx.field(static=True)

    @property
    def sde(self) -> AbstractSDE:  # type: ignore[override]
        return self.model.sde

    def __call__(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*data"]:
        jax.debug.callback(self.tally.add, t, x, jax.tree.leaves(cond))
        return self.model(t, x, cond, key=key)


def count_evaluations(
    run: Callable[[AbstractScoreModel], _Out], model: AbstractScoreModel
) -> tuple[_Out, dict[str, int]]:
    r"""Run `run(counted)` and count how many times each score model inside `model` was evaluated.

    `counted` is `model` with every `AbstractScoreModel` in it (the model itself and, recursively, those held in its
    fields or in tuples/lists of its fields: a `Guided`'s `main` and `reference`, a `ReconstructionGuidance`'s
    `model`, ...) wrapped in a counter. The counts are of evaluations actually performed, summed over examples: with
    `sample` on $n$ examples a fixed-step sampler gives $n$ times the per-example count (the same for every example),
    so `counts["model.reference"] / n` is the reference model's NFE per sample. A `Guided` with an `Interval` weight
    skips its reference outside the interval (a `lax.cond` on the unbatched time of the fixed-step samplers); under
    a batched time (`log_likelihood` vmaps one adaptive solve per example) both branches run and are counted. A
    `ClassifierFreeGuidance` batching its two conditionings into one call counts as two evaluations of its network.

    A diagnostic: each evaluation of each example costs a host callback, so keep batches small; `run` is traced
    anew (the counters are static fields).

    **Arguments:** `run`: a function of one score model, e.g. `lambda m: sf.sample(m, sde, key, (n, d), sampler)`;
    `model`: the composed score model.

    **Returns:** `(run(counted), counts)` with `counts` a dict from the path of each model (`"model"`,
    `"model.main"`, `"model.reference"`, `"model.models[1]"`, ...) to its number of evaluations.
    """
    if not isinstance(model, AbstractScoreModel):
        raise TypeError(f"count_evaluations needs `model` to be an AbstractScoreModel; got {model!r}")
    tallies: dict[str, _Tally] = {}
    counted = _wrap(model, "model", tallies)
    out = run(counted)
    jax.block_until_ready(out)
    jax.effects_barrier()
    return out, {path: tally.count for path, tally in tallies.items()}


def _wrap(model: AbstractScoreModel, path: str, tallies: dict[str, _Tally]) -> AbstractScoreModel:
    for f in dataclasses.fields(model):
        value = getattr(model, f.name, None)
        if isinstance(value, AbstractScoreModel):
            new: Any = _wrap(value, f"{path}.{f.name}", tallies)
        elif isinstance(value, (tuple, list)) and any(isinstance(v, AbstractScoreModel) for v in value):
            new = type(value)(
                _wrap(v, f"{path}.{f.name}[{i}]", tallies) if isinstance(v, AbstractScoreModel) else v
                for i, v in enumerate(value)
            )
        else:
            continue
        model = eqx.tree_at(lambda m, name=f.name: getattr(m, name), model, new)
    tally = tallies[path] = _Tally()
    return _Counted(model, tally)
