r"""Decoders $p(x \mid z_0)$ for data on `num_levels` evenly spaced levels in $[-1, 1]$ (the VLB's reconstruction term).

Levels are $x_k = 2k/(L-1) - 1$, $k = 0, \dots, L-1$; bins are $[x_k - \delta, x_k + \delta]$ with
$\delta = 1/(L-1)$, the outermost ones extended to $\pm\infty$.
"""

import abc
import math

import equinox as eqx
import jax.numpy as jnp
from jax.scipy.special import log_ndtr
from jaxtyping import Array, Float

from .._custom_types import Scalar


def check_num_levels(num_levels: int) -> None:
    """Raise a `ValueError` naming `num_levels` unless it is an int >= 2."""
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(f"`num_levels` must be an int >= 2 (levels of the data in [-1, 1]); got {num_levels!r}")


def _log1mexp(d: Array) -> Array:
    """log(1 - exp(d)) for d < 0, accurate on both sides of -log 2 (Maechler, 2012)."""
    return jnp.where(d > -math.log(2.0), jnp.log(-jnp.expm1(d)), jnp.log1p(-jnp.exp(d)))


def _log_mass_and_tails(a: Array, b: Array) -> tuple[Array, Array, Array]:
    r"""$(\log(\Phi(b) - \Phi(a)), \log\Phi(b), \log\Phi(-a))$ for finite $a < b$, elementwise and stable.

    The interval is reflected into the lower half-line, where `log_ndtr` keeps full relative accuracy, and the
    difference is formed as $\log\Phi(h) + \log(1 - e^{\log\Phi(l) - \log\Phi(h)})$. Very narrow intervals
    ($b - a < 10^{-3}$), where that difference cancels, use the midpoint rule with its curvature correction
    $\log(\phi(m)(b - a)(1 + (b - a)^2(m^2 - 1)/24))$. One stacked `log_ndtr` call keeps the compiled graph small.
    """
    flip = a + b > 0
    lo, hi = jnp.where(flip, -b, a), jnp.where(flip, -a, b)
    log_lo, log_hi, log_b, log_not_a = log_ndtr(jnp.stack([lo, hi, b, -a]))
    width = b - a
    narrow = width < 1e-3
    d = jnp.where(narrow, -1.0, log_lo - log_hi)  # keep the unused branch finite (finite gradients)
    wide = log_hi + _log1mexp(d)
    m = 0.5 * (a + b)
    safe_w = jnp.where(narrow, width, 1e-3)
    mid = -0.5 * m**2 - 0.5 * math.log(2 * math.pi) + jnp.log(safe_w) + jnp.log1p(safe_w**2 * (m**2 - 1) / 24)
    return jnp.where(narrow, mid, wide), log_b, log_not_a


def log_normal_mass(a: Array, b: Array) -> Array:
    r"""$\log(\Phi(b) - \Phi(a))$ for finite $a < b$, elementwise, computed stably (see `_log_mass_and_tails`)."""
    return _log_mass_and_tails(a, b)[0]


class AbstractDecoder(eqx.Module):
    """Strategy: the per-dimension log-likelihood of discrete data `x` given the least-noisy latent `z0`."""

    @abc.abstractmethod
    def log_prob(
        self, x: Float[Array, "*data"], z0: Float[Array, "*data"], alpha0: Scalar, sigma0: Scalar, num_levels: int
    ) -> Float[Array, "*data"]:
        r"""$\log p(x_i \mid z_{0})$ in nats for every dimension.

        `x` lies on the levels and $z_0 = \alpha_0 x + \sigma_0\epsilon$."""


class DiscretisedGaussianDecoder(AbstractDecoder):
    r"""$p(x_i \mid z_0) = \int_{\text{bin}(x_i)} N(u; z_{0,i}/\alpha_0, (\sigma_0/\alpha_0)^2)\,du$, with the edge bins
    open (as in Ho et al., 2020, for the last DDPM step; Kingma et al., 2021 use a categorical of the same mean)."""

    def log_prob(
        self, x: Float[Array, "*data"], z0: Float[Array, "*data"], alpha0: Scalar, sigma0: Scalar, num_levels: int
    ) -> Float[Array, "*data"]:
        check_num_levels(num_levels)
        half = 1.0 / (num_levels - 1)
        k = jnp.clip(jnp.round((x + 1.0) * 0.5 * (num_levels - 1)), 0, num_levels - 1)
        mean, std = z0 / alpha0, sigma0 / alpha0
        a = (x - half - mean) / std
        b = (x + half - mean) / std
        inner, lower_edge, upper_edge = _log_mass_and_tails(a, b)
        return jnp.where(k == 0, lower_edge, jnp.where(k == num_levels - 1, upper_edge, inner))


class DiscreteUniformDecoder(AbstractDecoder):
    r"""$p(x_i \mid z_0) = 1/L$, ignoring $z_0$: a reconstruction cost of exactly $\log_2 L$ bits per dimension."""

    def log_prob(
        self, x: Float[Array, "*data"], z0: Float[Array, "*data"], alpha0: Scalar, sigma0: Scalar, num_levels: int
    ) -> Float[Array, "*data"]:
        check_num_levels(num_levels)
        return jnp.full(x.shape, -math.log(num_levels), x.dtype)
