import jax.numpy as jnp

from .._custom_types import Scalar
from .base import AbstractSchedule


# Added inside the log so that gamma(0) is finite (sigma(0)^2 = 1e-16, so sub-VP std(0)^2 is a normal float32) while
# sigma^2 * dgamma/dt still equals beta(t) exactly, also at t = 0.
_FLOOR = 1e-16


class LinearSchedule(AbstractSchedule):
    r"""The linear-$\beta$ VP schedule of DDPM / score-SDE: $\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})$.

    $\alpha(t)^2 = \exp(-\int_0^t \beta)$, so $\gamma(t) = \log(\mathrm{expm1}(\int_0^t \beta))$ (Song et al., 2021).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __check_init__(self):
        if not (self.beta_min > 0 and self.beta_max > self.beta_min):
            raise ValueError(
                f"LinearSchedule needs 0 < beta_min < beta_max; got beta_min={self.beta_min}, "
                f"beta_max={self.beta_max}"
            )

    def integral_beta(self, t: Scalar) -> Scalar:
        r"""$\int_0^t \beta(s) ds$."""
        return t * (self.beta_min + 0.5 * (self.beta_max - self.beta_min) * t)

    def _gamma(self, t: Scalar) -> Scalar:
        return jnp.log(jnp.expm1(self.integral_beta(t)) + _FLOOR)

