r"""Time samplers: strategies mapping `(key, batch_size, t0, T)` to times in $[t_0, T]$ and importance weights.

Each returns `(t, w)` with `mean(w * l(t))` an unbiased estimate of $E_{t \sim U[t_0, T]}[l(t)]$: the weight is
$u(t)/q(t)$ for a sampling density $q$ and the uniform density $u = 1/(T - t_0)$; it is 1 except for
`ImportanceTimeSampler`. Callers stop gradients through `(t, w)`: the estimated integral does not depend on $q$.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._custom_types import ScalarLike
from .._misc import as_float
from .._sde import AbstractSDE, time_from_log_snr
from .weighting import neg_dlog_snr


TimesAndWeights = tuple[Float[Array, " batch"], Float[Array, " batch"]]


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int; got batch_size={batch_size!r}")


def _interval(t0: ScalarLike, T: ScalarLike) -> tuple[Array, Array]:
    t0, T = as_float(t0), as_float(T)
    if t0.ndim != 0 or T.ndim != 0:
        raise ValueError(f"`t0` and `T` must be scalars; got shapes {t0.shape} and {T.shape}")
    t0 = eqx.error_if(t0, ~(t0 < T), "`t0` must be smaller than `T`")
    return t0, T


class AbstractTimeSampler(eqx.Module):
    """Strategy: draws a batch of times in [t0, T] with importance weights (see the module docstring)."""

    @abc.abstractmethod
    def __call__(self, key: PRNGKeyArray, batch_size: int, t0: ScalarLike, T: ScalarLike) -> TimesAndWeights:
        """**Arguments:** `key`, `batch_size` (positive int), `t0 < T` (the interval). **Returns:** `(t, w)`."""


class AbstractUnitTimeSampler(AbstractTimeSampler):
    """A sampler with uniform marginals: `t = t0 + (T - t0) u` for points `u` in [0, 1), weights 1."""

    @abc.abstractmethod
    def unit(self, key: PRNGKeyArray, batch_size: int) -> Float[Array, " batch"]:
        """Points in [0, 1) whose marginals are uniform."""

    def __call__(self, key: PRNGKeyArray, batch_size: int, t0: ScalarLike, T: ScalarLike) -> TimesAndWeights:
        _check_batch_size(batch_size)
        t0, T = _interval(t0, T)
        u = self.unit(key, batch_size).astype(t0.dtype)
        t = t0 + (T - t0) * u
        return t, jnp.ones_like(t)


class UniformTimeSampler(AbstractUnitTimeSampler):
    r"""Independent $t_i \sim U[t_0, T]$."""

    def unit(self, key: PRNGKeyArray, batch_size: int) -> Float[Array, " batch"]:
        return jax.random.uniform(key, (batch_size,))


class AntitheticTimeSampler(AbstractUnitTimeSampler):
    r"""Antithetic pairs $u_i$ and $1 - u_i$ (the first $\lceil B/2 \rceil$ drawn, the rest mirrored)."""

    def unit(self, key: PRNGKeyArray, batch_size: int) -> Float[Array, " batch"]:
        u = jax.random.uniform(key, ((batch_size + 1) // 2,))
        return jnp.concatenate([u, 1.0 - u])[:batch_size]


class LowDiscrepancyTimeSampler(AbstractUnitTimeSampler):
    r"""VDM's low-discrepancy sampler: $u_i = (u + i/B) \bmod 1$ with one $u \sim U[0, 1)$ (Kingma et al., 2021)."""

    def unit(self, key: PRNGKeyArray, batch_size: int) -> Float[Array, " batch"]:
        u = jax.random.uniform(key, ())
        return jnp.mod(u + jnp.arange(batch_size) / batch_size, 1.0)


def inverse_log_snr(sde: AbstractSDE, lam: ArrayLike, t0: ScalarLike, T: ScalarLike) -> Array:
    r"""The time $t \in [t_0, T]$ with $\lambda(t) = $ `lam` (elementwise): `time_from_log_snr` clipped to
    $[t_0, T]$."""
    lam = as_float(lam)
    t0, T = _interval(t0, T)
    return jnp.clip(time_from_log_snr(sde, lam), t0.astype(lam.dtype), T.astype(lam.dtype))


class ImportanceTimeSampler(AbstractTimeSampler):
    r"""Importance sampling for the likelihood-weighted loss: density $q(t) \propto g(t)^2/\sigma(t)^2 =
    -\lambda'(t)$ on $[t_0, T]$, by inverse CDF: $\lambda(t) = \lambda(t_0) - u(\lambda(t_0) - \lambda(T))$ (uniform in
    log-SNR; Song et al., 2021, "Maximum likelihood training", sec. 5). Weights
    $w = (\lambda(t_0) - \lambda(T)) / ((T - t_0)(-\lambda'(t)))$, so `LikelihoodWeighting` times $w$ is constant
    in $t$.

    `base` supplies the uniform points $u$ (antithetic or low-discrepancy ones work too).
    """

    sde: AbstractSDE
    base: AbstractUnitTimeSampler = UniformTimeSampler()

    def __call__(self, key: PRNGKeyArray, batch_size: int, t0: ScalarLike, T: ScalarLike) -> TimesAndWeights:
        _check_batch_size(batch_size)
        t0, T = _interval(t0, T)
        lam0, lam1 = self.sde.log_snr(t0), self.sde.log_snr(T)
        u = self.base.unit(key, batch_size).astype(lam0.dtype)
        t = inverse_log_snr(self.sde, lam0 - u * (lam0 - lam1), t0, T)
        rate = jax.vmap(lambda s: neg_dlog_snr(self.sde, s))(t)
        return t, (lam0 - lam1) / ((T - t0) * rate)
