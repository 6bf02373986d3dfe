r"""Parameterisations: how a raw network output $F$ becomes a denoiser and a score.

Every parameterisation is written once in the EDM form (Karras et al., 2022):
$D(x) = c_{skip} x + c_{out} F(c_{in} x, c_{noise})$, and, in closed form so that no cancellation is
introduced, the matching score $s(x) = s_x x + s_F F$ (equal to $(\alpha D - x)/\sigma^2$).
$c_{noise} = -\lambda/8$ for all of them, with $\lambda$ the log-SNR; it equals EDM's $\tfrac14\log\sigma$ when
$\alpha = 1$, so networks see the same time input under every SDE.
"""

import abc
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._custom_types import Scalar


class Scalings(NamedTuple):
    c_skip: Scalar
    c_out: Scalar
    c_in: Scalar
    c_noise: Scalar
    s_x: Scalar
    s_F: Scalar


def _r(alpha: Array, sigma: Array) -> Array:
    return jnp.sqrt(alpha**2 + sigma**2)


class AbstractParameterisation(eqx.Module):
    """Strategy: what the raw network predicts."""

    @abc.abstractmethod
    def scalings(self, alpha: Scalar, sigma: Scalar, log_snr: Scalar) -> Scalings:
        """c_skip, c_out, c_in, c_noise and the score coefficients s_x, s_F at one time."""


class EpsPrediction(AbstractParameterisation):
    r"""The network predicts the noise $\epsilon$ (DDPM)."""

    def scalings(self, alpha, sigma, log_snr):
        r = _r(alpha, sigma)
        return Scalings(1 / alpha, -sigma / alpha, 1 / r, -log_snr / 8, jnp.zeros_like(sigma), -1 / sigma)


class X0Prediction(AbstractParameterisation):
    r"""The network predicts the clean data $x_0$."""

    def scalings(self, alpha, sigma, log_snr):
        r = _r(alpha, sigma)
        return Scalings(
            jnp.zeros_like(alpha), jnp.ones_like(alpha), 1 / r, -log_snr / 8, -1 / sigma**2, alpha / sigma**2
        )


class VPrediction(AbstractParameterisation):
    r"""The network predicts $v = \bar\alpha\epsilon - \bar\sigma x_0$ (Salimans & Ho, 2022)."""

    def scalings(self, alpha, sigma, log_snr):
        r = _r(alpha, sigma)
        return Scalings(alpha / r**2, -sigma / r, 1 / r, -log_snr / 8, -1 / r**2, -alpha / (r * sigma))


class ScorePrediction(AbstractParameterisation):
    r"""The network predicts the score itself."""

    def scalings(self, alpha, sigma, log_snr):
        r = _r(alpha, sigma)
        return Scalings(1 / alpha, sigma**2 / alpha, 1 / r, -log_snr / 8, jnp.zeros_like(sigma), jnp.ones_like(sigma))


class EDMPreconditioning(AbstractParameterisation):
    r"""EDM preconditioning with $\tilde\sigma = \sigma/\alpha$ on the rescaled input $x/\alpha$.

    $c_{skip} = \sigma_d^2/(\tilde\sigma^2 + \sigma_d^2)$, $c_{out} = \tilde\sigma\sigma_d/\sqrt{\tilde\sigma^2 +
    \sigma_d^2}$, $c_{in} = 1/\sqrt{\tilde\sigma^2 + \sigma_d^2}$, $c_{noise} = \tfrac14 \log\tilde\sigma$
    (Karras et al., 2022, table 1), with the $1/\alpha$ input scaling folded into $c_{skip}$ and $c_{in}$.
    """

    sigma_data: float = 0.5

    def __check_init__(self):
        if not self.sigma_data > 0:
            raise ValueError(f"EDMPreconditioning needs sigma_data > 0; got sigma_data={self.sigma_data}")

    def scalings(self, alpha, sigma, log_snr):
        sd = self.sigma_data
        st = sigma / alpha
        q = st**2 + sd**2
        c_skip = sd**2 / (q * alpha)
        c_out = st * sd / jnp.sqrt(q)
        c_in = 1 / (alpha * jnp.sqrt(q))
        s_x = -1 / (alpha**2 * q)
        s_F = sd / (sigma * jnp.sqrt(q))
        return Scalings(c_skip, c_out, c_in, -log_snr / 8, s_x, s_F)
