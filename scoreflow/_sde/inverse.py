r"""The inverse of an SDE's log-SNR: the one map from $\lambda$ back to $t$ (time grids, time samplers)."""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._schedule import LinearSchedule
from .._schedule.linear import _FLOOR
from .base import AbstractSDE
from .edm import EDMSDE
from .ve import VESDE
from .vp import VPSDE


_BISECTION_ITERS = 64  # halves [0, T] to below float64 resolution


def time_from_log_snr(
    sde: AbstractSDE, log_snr: Float[ArrayLike, "*shape"]
) -> Float[Array, "*shape"]:
    r"""The time $t \in [0, T]$ with $\lambda(t) = $ `log_snr`, clipped to $[\lambda(T), \lambda(0)]$.

    Closed form for `EDMSDE` ($t = \sigma$), `VESDE` ($\log\sigma$ linear in $t$) and `VPSDE(LinearSchedule)`
    ($\int_0^t\beta = \log(1 + e^{-\lambda} - \text{floor})$, a quadratic in $t$ solved in its cancellation-free
    form); for every other SDE (other VP schedules, learned ones included, and sub-VP) a fixed-iteration bisection
    on the monotone (decreasing) $\lambda(t)$, which is jittable and exact to float resolution.
    """
    lam = jnp.asarray(log_snr, dtype=jnp.result_type(log_snr, float))
    if isinstance(sde, EDMSDE):
        return jnp.clip(jnp.exp(-0.5 * lam), 0.0, sde.T)
    if isinstance(sde, VESDE):
        t = (-0.5 * lam - math.log(sde.sigma_min)) / math.log(sde.sigma_max / sde.sigma_min)
        return jnp.clip(t, 0.0, sde.T)
    if isinstance(sde, VPSDE) and isinstance(sde.schedule, LinearSchedule):
        b0, b1 = sde.schedule.beta_min, sde.schedule.beta_max
        big_b = jnp.log1p(jnp.maximum(jnp.exp(-lam) - _FLOOR, 0.0))
        t = 2.0 * big_b / (b0 + jnp.sqrt(b0**2 + 2.0 * (b1 - b0) * big_b))
        return jnp.clip(t, 0.0, sde.T)

    def invert(target):
        def body(_, lo_hi):
            lo, hi = lo_hi
            mid = 0.5 * (lo + hi)
            above = sde.log_snr(mid) > target  # lambda decreasing: the root lies later than mid
            return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

        zero = jnp.zeros_like(target)
        lo, hi = jax.lax.fori_loop(0, _BISECTION_ITERS, body, (zero, zero + sde.T))
        return 0.5 * (lo + hi)

    flat = lam.reshape(-1)
    return jax.vmap(invert)(flat).reshape(lam.shape)
