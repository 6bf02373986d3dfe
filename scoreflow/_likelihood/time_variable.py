"""Integration variables for the probability-flow ODE: t, log-SNR, or the EDM noise level sigma/alpha."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Scalar
from .._misc import as_float
from .._sde import AbstractSDE


_BISECTION_STEPS = 64  # halves [t0, T] down to below one ulp in float64


class AbstractTimeVariable(eqx.Module):
    r"""A variable $u = u(t)$, strictly increasing in $t$, in which the ODE is integrated.

    The ODE $dx/dt = v(t, x)$ becomes $dx/du = v(t(u), x)\,/\,u'(t(u))$; the end points and the log-density
    are unchanged, only the solver's steps are placed differently. A variable in which the solution is
    closer to linear needs fewer steps (Karras et al., 2022; Lu et al., 2022, for log-SNR).
    """

    @abc.abstractmethod
    def to_u(self, sde: AbstractSDE, t: Scalar) -> Scalar:
        """u(t)."""

    @abc.abstractmethod
    def to_t(self, sde: AbstractSDE, u: Scalar, t_lo: Scalar, t_hi: Scalar) -> Scalar:
        """The inverse t(u), for u between u(t_lo) and u(t_hi)."""

    def t_and_dt_du(self, sde: AbstractSDE, u: Scalar, t_lo: Scalar, t_hi: Scalar) -> tuple[Scalar, Scalar]:
        """t(u) and dt/du = 1/u'(t(u))."""
        t = self.to_t(sde, u, t_lo, t_hi)
        _, du_dt = jax.jvp(lambda s: self.to_u(sde, s), (t,), (jnp.ones_like(t),))
        return t, 1.0 / du_dt


class TimeVariable(AbstractTimeVariable):
    """Integrate in the SDE's own time t (what score-SDE and sbgm do)."""

    def to_u(self, sde: AbstractSDE, t: Scalar) -> Scalar:
        return as_float(t)

    def to_t(self, sde: AbstractSDE, u: Scalar, t_lo: Scalar, t_hi: Scalar) -> Scalar:
        return as_float(u)

    def t_and_dt_du(self, sde: AbstractSDE, u: Scalar, t_lo: Scalar, t_hi: Scalar) -> tuple[Scalar, Scalar]:
        u = as_float(u)
        return u, jnp.ones_like(u)


class _AbstractNoiseLevelVariable(AbstractTimeVariable):
    r"""A variable $u = h(\lambda(t))$ of the log-SNR alone; $t(u)$ is found by bisection on $[t_{lo}, t_{hi}]$.

    The bisection runs without gradients; one Newton step on top restores exact derivatives of $t(u)$ with
    respect to $u$ and to any learnable schedule (implicit function theorem), so the likelihood stays
    differentiable.
    """

    @abc.abstractmethod
    def _from_log_snr(self, lam: Scalar) -> Scalar:
        """u as a function of the log-SNR (decreasing in lam)."""

    def to_u(self, sde: AbstractSDE, t: Scalar) -> Scalar:
        return self._from_log_snr(sde.log_snr(t))

    def to_t(self, sde: AbstractSDE, u: Scalar, t_lo: Scalar, t_hi: Scalar) -> Scalar:
        u, t_lo, t_hi = as_float(u), as_float(t_lo), as_float(t_hi)
        target = jax.lax.stop_gradient(u)
        # No tangents enter the loop: its result is refined by the Newton step below.
        sde_ng = jax.tree.map(lambda a: jax.lax.stop_gradient(a) if eqx.is_array(a) else a, sde)

        def bisect(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            above = self.to_u(sde_ng, mid) > target
            return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

        lo, hi = jax.lax.fori_loop(
            0, _BISECTION_STEPS, bisect, (jax.lax.stop_gradient(t_lo), jax.lax.stop_gradient(t_hi))
        )
        t_star = jax.lax.stop_gradient(0.5 * (lo + hi))
        g, dg = jax.jvp(lambda s: self.to_u(sde, s), (t_star,), (jnp.ones_like(t_star),))
        t = t_star - (g - u) / jax.lax.stop_gradient(dg)
        # Round-off can push the Newton step a hair outside [t_lo, t_hi]: clip the value, keep the derivative.
        return t + jax.lax.stop_gradient(jnp.clip(t, t_lo, t_hi) - t)


class LogSNRVariable(_AbstractNoiseLevelVariable):
    r"""$u = -\lambda(t)/2 = \log(\sigma/\alpha)$: the variable of DPM-Solver (Lu et al., 2022)."""

    def _from_log_snr(self, lam: Float[Array, ""]) -> Scalar:
        return -0.5 * lam


class SigmaVariable(_AbstractNoiseLevelVariable):
    r"""$u = e^{-\lambda(t)/2} = \sigma/\alpha$: the noise level of the equivalent variance-exploding
    process, EDM's integration variable (Karras et al., 2022). For `EDMSDE` this is t itself."""

    def _from_log_snr(self, lam: Float[Array, ""]) -> Scalar:
        return jnp.exp(-0.5 * lam)
