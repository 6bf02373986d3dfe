import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Scalar, ScalarLike
from .._schedule import AbstractSchedule
from .base import AbstractSDE


class VPSDE(AbstractSDE):
    r"""Variance-preserving SDE $dx = -\tfrac12\beta(t) x\,dt + \sqrt{\beta(t)}\,dW$ for any schedule.

    With $\gamma = -\log\mathrm{SNR}$ from the schedule: $\alpha^2 = \mathrm{sigmoid}(-\gamma)$,
    $\sigma^2 = \mathrm{sigmoid}(\gamma)$ and $\beta(t) = \sigma^2 \gamma'(t)$. Learnable schedules make a
    learnable SDE. Prior N(0, I) at T = 1.
    """

    schedule: AbstractSchedule
    t0: float = eqx.field(default=1e-5, static=True)
    T: float = eqx.field(default=1.0, static=True)

    def __check_init__(self):
        if self.T != 1.0:
            raise ValueError(f"VPSDE runs on t in [0, 1]; got T={self.T}")
        if not 0.0 <= self.t0 < self.T:
            raise ValueError(f"VPSDE needs 0 <= t0 < 1; got t0={self.t0}")

    def beta(self, t: ScalarLike) -> Scalar:
        r"""$\beta(t) = \sigma(t)^2 \gamma'(t) = -d\log\alpha(t)^2/dt$."""
        g, dg = self.schedule.gamma_and_dgamma(t)
        return jax.nn.sigmoid(g) * dg

    def alpha_sigma(self, t: ScalarLike) -> tuple[Scalar, Scalar]:
        return self.schedule.alpha_sigma(t)

    def log_snr(self, t: ScalarLike) -> Scalar:
        return -self.schedule.gamma(t)

    def drift_coeff(self, t: ScalarLike) -> Scalar:
        return -0.5 * self.beta(t)

    def diffusion(self, t: ScalarLike) -> Scalar:
        return jnp.sqrt(self.beta(t))

    def prior_std(self) -> float:
        return 1.0


class SubVPSDE(AbstractSDE):
    r"""Score-SDE's sub-VP SDE: $dx = -\tfrac12\beta x\,dt + \sqrt{\beta(1 - \alpha^4)}\,dW$.

    Mean scale $\alpha(t)$ as in the VP SDE with the same schedule, standard deviation $1 - \alpha(t)^2$
    (variance $(1-\alpha^2)^2$, below the VP one). Prior N(0, I) at T = 1 (as in Song et al., 2021).
    """

    schedule: AbstractSchedule
    t0: float = eqx.field(default=1e-5, static=True)
    T: float = eqx.field(default=1.0, static=True)

    def __check_init__(self):
        if self.T != 1.0:
            raise ValueError(f"SubVPSDE runs on t in [0, 1]; got T={self.T}")
        if not 0.0 <= self.t0 < self.T:
            raise ValueError(f"SubVPSDE needs 0 <= t0 < 1; got t0={self.t0}")

    def alpha_sigma(self, t: ScalarLike) -> tuple[Scalar, Scalar]:
        g = self.schedule.gamma(t)
        # 1 - alpha^2 = sigmoid(gamma), computed without cancellation near t = 0.
        return jnp.sqrt(jax.nn.sigmoid(-g)), jax.nn.sigmoid(g)

    def log_snr(self, t: ScalarLike) -> Scalar:
        g = self.schedule.gamma(t)
        return -jax.nn.softplus(g) + 2.0 * jax.nn.softplus(-g)

    def drift_coeff(self, t: ScalarLike) -> Scalar:
        g, dg = self.schedule.gamma_and_dgamma(t)
        return -0.5 * jax.nn.sigmoid(g) * dg

    def diffusion(self, t: ScalarLike) -> Scalar:
        g, dg = self.schedule.gamma_and_dgamma(t)
        # beta (1 - alpha^4) = beta (1 - alpha^2)(1 + alpha^2)
        s_plus, s_minus = jax.nn.sigmoid(g), jax.nn.sigmoid(-g)
        return jnp.sqrt(s_plus * dg * s_plus * (1.0 + s_minus))

    def prior_std(self) -> float:
        return 1.0
