import jax.numpy as jnp

from .._custom_types import Scalar
from .base import AbstractSchedule


class CosineSchedule(AbstractSchedule):
    r"""Cosine schedule, $\alpha(t) \propto \cos(\pi t / 2)$, shifted so that $\gamma$ is finite at both ends.

    $\gamma(t) = 2 \log \tan(a t + b)$ with $b = \arctan(e^{\gamma_{min}/2})$ and
    $a = \arctan(e^{\gamma_{max}/2}) - b$, so $\gamma(0) = \gamma_{min}$ and $\gamma(1) = \gamma_{max}$
    (Nichol & Dhariwal, 2021; endpoints as in Kingma & Gao, 2023).
    """

    gamma_min: float = -15.0
    gamma_max: float = 15.0

    def __check_init__(self):
        if not self.gamma_min < self.gamma_max:
            raise ValueError(
                f"CosineSchedule needs gamma_min < gamma_max; got {self.gamma_min}, {self.gamma_max}"
            )

    def _gamma(self, t: Scalar) -> Scalar:
        # jnp (not math) so that the endpoints may be traced, e.g. when a model holding this schedule is a jit argument.
        b = jnp.arctan(jnp.exp(0.5 * jnp.asarray(self.gamma_min, t.dtype)))
        a = jnp.arctan(jnp.exp(0.5 * jnp.asarray(self.gamma_max, t.dtype))) - b
        return 2.0 * jnp.log(jnp.tan(a * t + b))
