r"""Classifier-free guidance: one conditional network evaluated with the conditioning and with its null value."""

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Conditioning
from .._model import AbstractScoreModel
from .._sde import AbstractSDE
from .guided import AbstractGuided
from .weight import AbstractGuidanceWeight


class ClassifierFreeGuidance(AbstractGuided):
    r"""$s = s(t, x, \varnothing) + g(\tilde\sigma)\,(s(t, x, c) - s(t, x, \varnothing))$ (Ho & Salimans, 2022):
    a `Guided` whose main and reference models are the same network, with conditioning $c$ and with the null
    conditioning $\varnothing$ it was trained to accept (label dropout).

    **Arguments:**
    - `model`: a conditional `AbstractScoreModel`, called as `model(t, x, cond)`.
    - `cond`: the conditioning $c$, or None to take it from the call, so that `sample(cfg, ..., cond=labels)`
      guides each example towards its own label.
    - `null`: the null conditioning $\varnothing$ (e.g. the label -1, or a zero embedding).
    - `weight`: an `AbstractGuidanceWeight` (`Constant(g)`, `Interval(lo, hi, g)`, `Ramp(...)`).
    - `batch`: evaluate the two conditionings as one `vmap`ped call of size 2 (one batched network evaluation
      instead of two sequential ones). Used when `cond` and `null` have the same tree structure and shapes and
      leaves of the same kind (`null` is cast to `cond`'s dtypes); otherwise (or with `batch=False`, e.g. for a
      network whose memory does not allow it) two calls.
      Both evaluations get the same `key` (the same dropout mask).

    Where $g = 1$ only $s(t, x, c)$ is computed (see `AbstractGuided`).
    """

    model: AbstractScoreModel
    cond: Conditioning
    null: Conditioning
    weight: AbstractGuidanceWeight
    batch: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        if not isinstance(self.model, AbstractScoreModel):
            raise TypeError(f"ClassifierFreeGuidance needs `model` to be an AbstractScoreModel; got {self.model!r}")
        if not isinstance(self.weight, AbstractGuidanceWeight):
            raise TypeError(
                "ClassifierFreeGuidance needs `weight` to be an AbstractGuidanceWeight (Constant(g), "
                f"Interval(lo, hi, g), Ramp(...)); got weight={self.weight!r}"
            )

    @property
    def sde(self) -> AbstractSDE:  # type: ignore[override]
        return self.model.sde

    def _cond(self, cond):
        if self.cond is None:
            if cond is None:
                raise ValueError(
                    "ClassifierFreeGuidance has `cond=None`, so it takes the conditioning from the call; got none "
                    "(pass cond= to the call or to sample, or fix it in the wrapper)"
                )
            return cond
        if cond is not None:
            raise ValueError(
                "ClassifierFreeGuidance already holds its conditioning `cond`; the call must not pass another one "
                f"(got cond={cond!r}); build it with cond=None to take the conditioning from each call"
            )
        return self.cond

    def main_score(self, t, x, cond, key):
        return self.model(t, x, self._cond(cond), key=key)

    def main_and_reference(self, t, x, cond, key):
        c = self._cond(cond)
        if self.batch and _stackable(c, self.null):
            both = jax.tree.map(
                lambda a, b: jnp.stack([jnp.asarray(a), jnp.asarray(b, jnp.result_type(a))]), c, self.null
            )
            out = jax.vmap(lambda ci: self.model(t, x, ci, key=key))(both)
            return out[0], out[1]
        return self.model(t, x, c, key=key), self.model(t, x, self.null, key=key)


def _stackable(a: Conditioning, b: Conditioning) -> bool:
    """Whether two conditionings can be stacked into one batch of two: the same structure and shapes, and each
    pair of leaves of one kind (integer, floating, bool), so that `b` casts to `a`'s dtype without loss of
    meaning (a label -1 given as a Python int next to int32 labels)."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb or not la:
        return False
    return all(jnp.shape(x) == jnp.shape(y) and _kind(x) == _kind(y) for x, y in zip(la, lb, strict=True))


def _kind(x) -> str:
    dtype = jnp.result_type(x)
    for kind in (jnp.bool_, jnp.integer, jnp.floating, jnp.complexfloating):
        if jnp.issubdtype(dtype, kind):
            return str(kind)
    return str(dtype)
