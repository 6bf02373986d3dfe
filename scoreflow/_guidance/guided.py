r"""Guidance as a score model: $s = s_{ref} + g(\tilde\sigma)\,(s_{main} - s_{ref})$."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Conditioning, ScalarLike
from .._misc import as_float, is_traced
from .._model import AbstractScoreModel
from .._sde import AbstractSDE
from .weight import AbstractGuidanceWeight, known_constant


class AbstractGuided(AbstractScoreModel):
    r"""A score model that combines a main and a reference score,
    $s = s_{ref} + g\,(s_{main} - s_{ref})$, with $g$ = `weight` at $\tilde\sigma = \sigma(t)/\alpha(t)$.

    Score, $\epsilon$, $x_0$ and $v$ are affine in one another at fixed $(t, x)$ with coefficients that do not
    depend on the model, and the combination's coefficients $(1 - g, g)$ sum to one, so the same combination
    holds for `eps`, `denoise` and `v` (derived from the score by `AbstractScoreModel`).

    Where $g = 1$ only the main score is computed: `lax.cond(g != 1, both, main)` on the scalar time. When `t`
    is batched under `vmap` (e.g. `log_likelihood`, which `vmap`s one adaptive solve per example) JAX turns that
    `cond` into a `select` that evaluates both branches, so the saving (not the result) is lost there; the
    fixed-step samplers of `sample` keep `t` unbatched (`count_evaluations` reports how often each model ran). If
    $g$ is a constant known at trace time (a `Constant`
    whose `g` is not traced) there is no `cond` at all. Because `select` computes the unused branch, a reference
    model that returns NaN where it is not used still gives finite scores, but reverse-mode gradients through
    that branch may be NaN; keep reference models finite.
    """

    weight: eqx.AbstractVar[AbstractGuidanceWeight]

    @abc.abstractmethod
    def main_score(
        self, t: Float[Array, ""], x: Float[Array, "*data"], cond: Conditioning, key: PRNGKeyArray | None
    ) -> Float[Array, "*data"]:
        """$s_{main}$ alone: the guided score where $g = 1$."""

    @abc.abstractmethod
    def main_and_reference(
        self, t: Float[Array, ""], x: Float[Array, "*data"], cond: Conditioning, key: PRNGKeyArray | None
    ) -> tuple[Float[Array, "*data"], Float[Array, "*data"]]:
        """$(s_{main}, s_{ref})$."""

    def __call__(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*data"]:
        t = as_float(t)
        if t.ndim != 0:
            raise ValueError(f"`t` must be a scalar (vmap over examples); got shape {t.shape}")
        g = self.weight.at_time(self.sde, t)

        def guided():
            s_main, s_ref = self.main_and_reference(t, x, cond, key)
            gg = g.astype(jnp.result_type(s_main))
            return s_ref + gg * (s_main - s_ref)

        def main():
            return self.main_score(t, x, cond, key)

        constant = known_constant(self.weight)
        if constant is not None:  # known at trace time: no cond
            return main() if constant == 1 else guided()
        return jax.lax.cond(g != 1, guided, main)


class Guided(AbstractGuided):
    r"""$s = s_{ref} + g(\tilde\sigma)\,(s_{main} - s_{ref})$ for two score models of the same SDE.

    - Classifier-free guidance (Ho & Salimans, 2022): `main` conditional, `reference` unconditional (see
      `ClassifierFreeGuidance` for one network evaluated twice).
    - Autoguidance (Karras et al., 2024, "Guiding a diffusion model with a bad version of itself"): `reference`
      a weaker model of the same task and conditioning (smaller and/or trained for less), `Guided(main, weak,
      Constant(g))`.
    - Guidance interval: `weight=Interval(sigma_lo, sigma_hi, g)`; outside it the reference is not evaluated.

    **Arguments:** `main`, `reference`: `AbstractScoreModel`s with equal SDEs (the combination is of scores at
    the same $t$); `weight`: an `AbstractGuidanceWeight` (`Constant`, `Interval`, `Ramp`). Both models get the
    call's `cond`; a `key` is split in two, one for each.
    """

    main: AbstractScoreModel
    reference: AbstractScoreModel
    weight: AbstractGuidanceWeight

    def __check_init__(self):
        for name in ("main", "reference"):
            if not isinstance(getattr(self, name), AbstractScoreModel):
                raise TypeError(
                    f"Guided needs `{name}` to be an AbstractScoreModel; got {name}={getattr(self, name)!r}"
                )
        if not isinstance(self.weight, AbstractGuidanceWeight):
            raise TypeError(
                "Guided needs `weight` to be an AbstractGuidanceWeight (Constant(g), Interval(lo, hi, g), Ramp(...)); "
                f"got weight={self.weight!r}"
            )
        _check_same_sde(self.main.sde, self.reference.sde)

    @property
    def sde(self) -> AbstractSDE:  # type: ignore[override]
        return self.main.sde

    def main_score(self, t, x, cond, key):
        return self.main(t, x, cond, key=key)

    def main_and_reference(self, t, x, cond, key):
        k_main, k_ref = (None, None) if key is None else jax.random.split(key)
        return self.main(t, x, cond, key=k_main), self.reference(t, x, cond, key=k_ref)


def _check_same_sde(a: AbstractSDE, b: AbstractSDE) -> None:
    if type(a) is not type(b):
        raise ValueError(
            f"Guided needs `main` and `reference` to be models of the same SDE; got {type(a).__name__} and "
            f"{type(b).__name__}"
        )
    same = eqx.tree_equal(a, b)
    if not is_traced(same) and not bool(same):
        raise ValueError(f"Guided needs `main` and `reference` to be models of the same SDE; got {a!r} and {b!r}")
