import math

import equinox as eqx
import jax.numpy as jnp

from .._custom_types import Scalar, ScalarLike
from .._misc import as_float, check_time
from .base import AbstractSDE


class VESDE(AbstractSDE):
    r"""Variance-exploding SDE of score-SDE: $dx = \sigma(t)\sqrt{2\log(\sigma_{max}/\sigma_{min})}\,dW$.

    Mean scale 1 and marginal std $\sigma(t) = \sigma_{min}(\sigma_{max}/\sigma_{min})^t$ (score-SDE convention:
    the process at t = 0 is the data already perturbed at $\sigma_{min}$). Prior $N(0, \sigma_{max}^2 I)$.
    """

    sigma_min: float = eqx.field(default=0.01, static=True)
    sigma_max: float = eqx.field(default=50.0, static=True)
    t0: float = eqx.field(default=1e-5, static=True)
    T: float = eqx.field(default=1.0, static=True)

    def __check_init__(self):
        if not self.sigma_min > 0:
            raise ValueError(f"VESDE needs sigma_min > 0; got sigma_min={self.sigma_min}")
        if not self.sigma_max > self.sigma_min:
            raise ValueError(
                f"VESDE needs sigma_max > sigma_min; got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}"
            )
        if self.T != 1.0:
            raise ValueError(f"VESDE runs on t in [0, 1]; got T={self.T}")
        if not 0.0 <= self.t0 < 1.0:
            raise ValueError(f"VESDE needs 0 <= t0 < 1; got t0={self.t0}")

    def _log_sigma(self, t: ScalarLike) -> Scalar:
        t = check_time(as_float(t), self.T)
        return math.log(self.sigma_min) + t * math.log(self.sigma_max / self.sigma_min)

    def alpha_sigma(self, t: ScalarLike) -> tuple[Scalar, Scalar]:
        log_sigma = self._log_sigma(t)
        return jnp.ones_like(log_sigma), jnp.exp(log_sigma)

    def log_snr(self, t: ScalarLike) -> Scalar:
        return -2.0 * self._log_sigma(t)

    def drift_coeff(self, t: ScalarLike) -> Scalar:
        return jnp.zeros_like(self._log_sigma(t))

    def diffusion(self, t: ScalarLike) -> Scalar:
        return jnp.exp(self._log_sigma(t)) * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    def prior_std(self) -> float:
        return self.sigma_max
