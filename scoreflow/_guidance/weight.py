r"""Guidance weights $g(\tilde\sigma)$: strategies of the noise level, so one weight transfers between SDEs.

The argument is the EDM noise level $\tilde\sigma = \sigma(t)/\alpha(t) = e^{-\lambda(t)/2}$ of the SDE at $t$
($\tilde\sigma = t$ for `EDMSDE`). $g = 1$ means "no guidance": the guided score is then the main model's alone.
"""

import abc

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._custom_types import Scalar, ScalarLike
from .._misc import as_float, check_real, is_traced
from .._sde import AbstractSDE


_Number = ScalarLike | int  # a Python int weight (Constant(3)) is fine too


class AbstractGuidanceWeight(eqx.Module):
    r"""Strategy: the guidance weight $g$ as a function of the noise level $\tilde\sigma = \sigma/\alpha$."""

    @abc.abstractmethod
    def __call__(self, sigma: Float[Array, ""]) -> Scalar:
        r"""$g(\tilde\sigma)$ at the noise level `sigma` $= \sigma(t)/\alpha(t)$ (a scalar array)."""

    def at_log_snr(self, log_snr: ScalarLike) -> Scalar:
        r"""$g$ at log-SNR $\lambda$, i.e. at $\tilde\sigma = e^{-\lambda/2}$."""
        return self(jnp.exp(-0.5 * as_float(log_snr)))

    def at_time(self, sde: AbstractSDE, t: ScalarLike) -> Scalar:
        r"""$g$ at time `t` of `sde`: at $\tilde\sigma = \sigma(t)/\alpha(t)$ (computed from $(\alpha, \sigma)$, not
        through $\lambda$, so that `EDMSDE` gives $\tilde\sigma = t$ to the bit and interval ends are exact)."""
        alpha, sigma = sde.alpha_sigma(as_float(t))
        return self(sigma / alpha)


class Constant(AbstractGuidanceWeight):
    r"""$g(\tilde\sigma) = g$ at every noise level (classifier-free guidance as in Ho & Salimans, 2022, with their
    $w = g - 1$). A `g` that is not traced is known at trace time, so `Guided` then needs no `lax.cond`."""

    g: _Number

    def __check_init__(self):
        check_real("Constant", "g", self.g)

    def __call__(self, sigma: Float[Array, ""]) -> Scalar:
        return jnp.asarray(self.g, jnp.result_type(sigma))


class Interval(AbstractGuidanceWeight):
    r"""$g(\tilde\sigma) = g$ for $\tilde\sigma \in [\sigma_{lo}, \sigma_{hi}]$ (both ends included) and $1$ outside:
    guidance in a limited interval of noise levels (Kynkäänniemi et al., 2024, "Applying guidance in a limited
    interval improves sample and distribution quality in diffusion models"). Outside the interval `Guided` does
    not evaluate its reference model."""

    sigma_lo: _Number
    sigma_hi: _Number
    g: _Number

    def __check_init__(self):
        check_real("Interval", "sigma_lo", self.sigma_lo, 0.0)
        check_real("Interval", "sigma_hi", self.sigma_hi, 0.0, allow_inf=True)
        check_real("Interval", "g", self.g)
        if _known(self.sigma_lo, self.sigma_hi) and not _less(self.sigma_lo, self.sigma_hi):
            raise ValueError(
                f"Interval needs sigma_lo < sigma_hi; got sigma_lo={self.sigma_lo}, sigma_hi={self.sigma_hi}"
            )

    def __call__(self, sigma: Float[Array, ""]) -> Scalar:
        dtype = jnp.result_type(sigma)
        inside = (sigma >= self.sigma_lo) & (sigma <= self.sigma_hi)
        return jnp.where(inside, jnp.asarray(self.g, dtype), jnp.asarray(1.0, dtype))


class Ramp(AbstractGuidanceWeight):
    r"""$g$ linear in $\log\tilde\sigma$ (equivalently in log-SNR) from $g_{lo}$ at $\sigma_{lo}$ to $g_{hi}$ at
    $\sigma_{hi}$, held at $g_{lo}$ below $\sigma_{lo}$ and at $g_{hi}$ above $\sigma_{hi}$. With $g_{lo} = 1$ it
    switches guidance on gradually with the noise level instead of abruptly (cf. the increasing schedules of
    Wang et al., 2024, "Analysis of classifier-free guidance weight schedulers", written in log-SNR here so that
    they transfer between SDEs). Where it equals 1, `Guided` skips the reference model as for `Interval`."""

    sigma_lo: _Number
    sigma_hi: _Number
    g_lo: _Number
    g_hi: _Number

    def __check_init__(self):
        check_real("Ramp", "sigma_lo", self.sigma_lo, 0.0, low_open=True)
        check_real("Ramp", "sigma_hi", self.sigma_hi, 0.0, low_open=True)
        check_real("Ramp", "g_lo", self.g_lo)
        check_real("Ramp", "g_hi", self.g_hi)
        if _known(self.sigma_lo, self.sigma_hi) and not _less(self.sigma_lo, self.sigma_hi):
            raise ValueError(f"Ramp needs sigma_lo < sigma_hi; got sigma_lo={self.sigma_lo}, sigma_hi={self.sigma_hi}")

    def __call__(self, sigma: Float[Array, ""]) -> Scalar:
        dtype = jnp.result_type(sigma)
        lo = jnp.log(jnp.asarray(self.sigma_lo, dtype))
        hi = jnp.log(jnp.asarray(self.sigma_hi, dtype))
        # log(0) = -inf clips to 0: sigma = 0 sits at the low end.
        u = jnp.clip((jnp.log(sigma) - lo) / (hi - lo), 0.0, 1.0)
        g_lo = jnp.asarray(self.g_lo, dtype)
        g_hi = jnp.asarray(self.g_hi, dtype)
        # Exact end values (no rounding of g_lo + 0 * (g_hi - g_lo)), so g = 1 there is detected exactly.
        return jnp.where(u <= 0, g_lo, jnp.where(u >= 1, g_hi, g_lo + u * (g_hi - g_lo)))


def known_constant(weight: AbstractGuidanceWeight) -> float | None:
    """The value of a `Constant` weight whose `g` is not traced, else None. Read from the field, not through
    `jnp` (under `jit` every `jnp` result is a tracer, even of a Python number)."""
    if isinstance(weight, Constant) and _known(weight.g):
        return float(np.asarray(weight.g))  # concrete here (numpy, not jnp: no tracer under jit)
    return None


def _known(*values) -> bool:
    """Whether every value is concrete (a traced field of a module rebuilt under `jit` has no value to compare)."""
    return not is_traced(values)


def _less(a: _Number, b: _Number) -> bool:
    return bool(jnp.asarray(a) < jnp.asarray(b))
