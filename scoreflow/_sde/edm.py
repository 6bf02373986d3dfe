
import equinox as eqx
import jax.numpy as jnp

from .._custom_types import Scalar, ScalarLike
from .._misc import as_float, check_time
from .base import AbstractSDE


class EDMSDE(AbstractSDE):
    r"""The EDM form (Karras et al., 2022): $\sigma(t) = t$, scaling $s(t) = 1$, so $dx = \sqrt{2t}\,dW$.

    Time is the noise level: $t \in [0, \sigma_{max}]$, `T = sigma_max`, default start `t0 = sigma_min`.
    Prior $N(0, \sigma_{max}^2 I)$.
    """

    sigma_min: float = eqx.field(default=0.002, static=True)
    sigma_max: float = eqx.field(default=80.0, static=True)

    def __check_init__(self):
        if not self.sigma_min > 0:
            raise ValueError(f"EDMSDE needs sigma_min > 0; got sigma_min={self.sigma_min}")
        if not self.sigma_max > self.sigma_min:
            raise ValueError(
                f"EDMSDE needs sigma_max > sigma_min; got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}"
            )

    @property
    def T(self) -> float:  # type: ignore[override]
        return self.sigma_max

    @property
    def t0(self) -> float:  # type: ignore[override]
        return self.sigma_min

    def _t(self, t: ScalarLike) -> Scalar:
        return check_time(as_float(t), self.sigma_max)

    def alpha_sigma(self, t: ScalarLike) -> tuple[Scalar, Scalar]:
        t = self._t(t)
        return jnp.ones_like(t), t

    def log_snr(self, t: ScalarLike) -> Scalar:
        return -2.0 * jnp.log(self._t(t))

    def drift_coeff(self, t: ScalarLike) -> Scalar:
        return jnp.zeros_like(self._t(t))

    def diffusion(self, t: ScalarLike) -> Scalar:
        return jnp.sqrt(2.0 * self._t(t))

    def prior_std(self) -> float:
        return self.sigma_max


