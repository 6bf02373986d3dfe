from collections.abc import Callable

from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Conditioning, ScalarLike
from .._misc import as_float
from .._sde import AbstractSDE
from .base import AbstractScoreModel
from .parameterisation import AbstractParameterisation, EpsPrediction


class ScoreModel(AbstractScoreModel):
    """A raw network turned into a score model by a parameterisation.

    The network is called as `network(c_noise, c_in * x, cond, key=key)` on one example and returns an array
    of the shape of `x`; see `MLP` and `UNet`. The parameterisation (`EpsPrediction()`, `X0Prediction()`,
    `VPrediction()`, `ScorePrediction()`, `EDMPreconditioning(sigma_data)`) says what that output means.
    """

    network: Callable
    sde: AbstractSDE
    parameterisation: AbstractParameterisation = EpsPrediction()

    def _raw(self, t, x, cond, key):
        t = as_float(t)
        alpha, sigma = self.sde.alpha_sigma(t)
        sc = self.parameterisation.scalings(alpha, sigma, self.sde.log_snr(t))
        out = self.network(sc.c_noise, sc.c_in * x, cond, key=key)
        if out.shape != x.shape:
            raise ValueError(f"the network must return an array of the shape of x, {x.shape}; got {out.shape}")
        return sc, out

    def __call__(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*data"]:
        sc, out = self._raw(t, x, cond, key)
        return sc.s_x * x + sc.s_F * out


