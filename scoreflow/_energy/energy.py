r"""Energies $E(x, t, c)$ on one example, and the wrapper that makes any energy a score model
($s = -\nabla_x E$), so that every sampler and `log_likelihood` accepts it."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Conditioning, ScalarLike
from .._misc import as_float
from .._model import AbstractScoreModel
from .._reference import GaussianMixture, marginal
from .._sde import AbstractSDE


class AbstractEnergy(eqx.Module):
    r"""An energy $E(x, t, c)$: the unnormalised log-density $\log p_t(x \mid c) = -E(x, t, c) - \log Z_t(c)$.

    Called as `energy(t, x, cond=None, *, key=None)` on **one** example (the argument order of score models);
    returns a scalar. `vmap` over examples.
    """

    @abc.abstractmethod
    def __call__(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, ""]:
        """The energy at (t, x)."""

    def log_prob(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, ""]:
        """$-E(x, t, c)$, the unnormalised log-density."""
        return -self(t, x, cond, key=key)

    def score(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*data"]:
        r"""$-\nabla_x E(x, t, c)$."""
        return -jax.grad(lambda y: self(t, y, cond, key=key))(x)


def _check_scalar(e: Array, where: str) -> Array:
    if jnp.shape(e) != ():
        raise ValueError(f"{where}: the energy must return a scalar for one example; got shape {jnp.shape(e)}")
    return e


class EnergyScoreModel(AbstractScoreModel):
    r"""Any `AbstractEnergy` as a score model of `sde`: $s_\theta(t, x) = -\nabla_x E_\theta(x, t, c)$.

    The energy's `t` is the SDE's time, so the energy must model the SDE's marginal $p_t$ (up to a constant in $x$).
    """

    energy: AbstractEnergy
    sde: AbstractSDE

    def __check_init__(self):
        if not isinstance(self.energy, AbstractEnergy):
            raise TypeError(f"`energy` must be an AbstractEnergy; got {type(self.energy).__name__}")

    def __call__(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*data"]:
        t = as_float(t)
        return -jax.grad(lambda y: _check_scalar(self.energy(t, y, cond, key=key), "EnergyScoreModel"))(x)


class MixtureEnergy(AbstractEnergy):
    r"""The exact energy of a Gaussian mixture pushed through `sde`: $E(x, t) = -\log p_t(x)$ (normalised,
    $Z_t = 1$). The analytic reference for energy-based code."""

    mixture: GaussianMixture
    sde: AbstractSDE

    def __call__(self, t, x, cond=None, *, key=None):
        if cond is not None:
            raise ValueError(f"MixtureEnergy is unconditional; got cond={cond!r}")
        return -marginal(self.mixture, self.sde, as_float(t)).log_prob(x)


class QuadraticEnergy(AbstractEnergy):
    r"""$E(x) = \tfrac12 (x - m)^\top P (x - m)$ for a symmetric positive-definite precision $P$, constant in $t$.
    Its normaliser is closed-form: $\log Z = \tfrac d2 \log 2\pi - \tfrac12 \log\det P$ (`log_normaliser`)."""

    mean: Float[Array, " d"]
    precision: Float[Array, "d d"]

    def __check_init__(self):
        d = self.mean.shape[0]
        if self.mean.ndim != 1 or self.precision.shape != (d, d):
            raise ValueError(
                f"QuadraticEnergy needs mean (d,) and precision (d, d); got {self.mean.shape} and "
                f"{self.precision.shape}"
            )

    def __call__(self, t, x, cond=None, *, key=None):
        r = x - self.mean
        return 0.5 * r @ self.precision @ r

    def log_normaliser(self) -> Float[Array, ""]:
        """$\\log Z = \\tfrac d2\\log 2\\pi - \\tfrac12\\log\\det P$."""
        d = self.mean.shape[0]
        _, logdet = jnp.linalg.slogdet(self.precision)
        return 0.5 * d * jnp.log(2 * jnp.pi) - 0.5 * logdet
