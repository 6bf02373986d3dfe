from .._custom_types import Scalar
from .base import AbstractSchedule


class FixedLinearSchedule(AbstractSchedule):
    r"""$\gamma(t) = \gamma_{min} + (\gamma_{max} - \gamma_{min}) t$: linear in log-SNR (VDM's fixed baseline)."""

    gamma_min: float = -13.3
    gamma_max: float = 5.0

    def __check_init__(self):
        if not self.gamma_min < self.gamma_max:
            raise ValueError(
                f"FixedLinearSchedule needs gamma_min < gamma_max; got {self.gamma_min}, {self.gamma_max}"
            )

    def _gamma(self, t: Scalar) -> Scalar:
        # Written as a convex combination so that both endpoints are returned exactly.
        return self.gamma_min * (1.0 - t) + self.gamma_max * t
