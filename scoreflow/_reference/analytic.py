from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Conditioning, ScalarLike
from .._misc import as_float
from .._model import AbstractScoreModel
from .._sde import AbstractSDE
from .mixture import GaussianMixture


def marginal(mixture: GaussianMixture, sde: AbstractSDE, t: ScalarLike) -> GaussianMixture:
    r"""The perturbed marginal $p_t$ of a Gaussian-mixture $p_0$ under a linear SDE, in closed form.

    $x_t = \alpha x_0 + \sigma\epsilon$ gives $p_t = \sum_k w_k N(\alpha\mu_k, \alpha^2\Sigma_k + \sigma^2 I)$;
    the covariances keep their eigenvectors, so nothing is factorised per call (safe in compiled loops).
    """
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"`mixture` must be a GaussianMixture; got {type(mixture).__name__}")
    t = as_float(t)
    if t.ndim != 0:
        raise ValueError(f"`t` must be a scalar; got shape {t.shape}")
    alpha, sigma = sde.alpha_sigma(t)
    return mixture.affine(alpha, sigma)


class AnalyticScore(AbstractScoreModel):
    """The exact score of a Gaussian mixture perturbed by `sde`; obeys the same contract as a learned model.

    `model(t, x)` is the closed-form score of `marginal(mixture, sde, t)` at one example `x`; `denoise`
    gives the exact (Bayes-optimal) denoiser $E[x_0 | x_t]$. Conditioning and keys are ignored.
    """

    mixture: GaussianMixture
    sde: AbstractSDE

    def __call__(
        self, t: ScalarLike, x: Float[Array, " d"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " d"]:
        if x.shape != (self.mixture.dim,):
            raise ValueError(f"`x` must be one example of shape ({self.mixture.dim},); got {x.shape}")
        return marginal(self.mixture, self.sde, t).score(x)


