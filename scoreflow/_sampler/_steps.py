r"""Discrete reverse steps from time t down to s < t with coefficients taken from alpha and sigma at the two
grid points, so that they are valid for any step size (unlike DDPM betas, which exceed 1 for large steps)."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Scalar
from .._sde import AbstractSDE
from .base import ScoreFn


def signal_ratio(sde: AbstractSDE, t: Scalar, s: Scalar) -> Scalar:
    r"""$r = \tilde\sigma_s^2/\tilde\sigma_t^2 = e^{\lambda_t - \lambda_s} \in (0, 1]$ for $s < t$."""
    return jnp.exp(sde.log_snr(t) - sde.log_snr(s))


def ddim_step(
    score: ScoreFn,
    sde: AbstractSDE,
    t: Scalar,
    s: Scalar,
    x: Float[Array, "*data"],
    eta: float | Scalar,
    key: PRNGKeyArray | None,
) -> Float[Array, "*data"]:
    r"""DDIM (Song et al., 2021) for any linear SDE: with $\hat x_0$, $\hat\epsilon$ from the score at $(t, x)$,
    $x_s = \alpha_s\hat x_0 + \sqrt{\sigma_s^2 - \sigma_\eta^2}\,\hat\epsilon + \sigma_\eta z$,
    $\sigma_\eta^2 = \eta^2\sigma_s^2(1 - r)$. $\eta = 1$ samples the DDPM posterior $q(x_s | x_t, \hat x_0)$."""
    alpha_t, sigma_t = sde.alpha_sigma(t)
    alpha_s, sigma_s = sde.alpha_sigma(s)
    sc = score(t, x)
    eps = -sigma_t * sc
    x0 = (x + sigma_t**2 * sc) / alpha_t
    one_minus_r = -jnp.expm1(sde.log_snr(t) - sde.log_snr(s))
    var_eta = eta**2 * one_minus_r
    out = alpha_s * x0 + sigma_s * jnp.sqrt(jnp.maximum(1.0 - var_eta, 0.0)) * eps
    if key is None:
        return out
    return out + sigma_s * jnp.sqrt(var_eta) * jax.random.normal(key, x.shape, x.dtype)
