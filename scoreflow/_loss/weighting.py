r"""Weightings of the denoising score-matching loss, all expressed in $\epsilon$ space.

With $x_t = \alpha x_0 + \sigma\epsilon$ and $\lambda = \log(\alpha^2/\sigma^2)$ the errors of the usual targets are
proportional to one another at fixed $(t, x_t)$:
$\|s - \hat s\|^2 = \sigma^{-2}\|\epsilon - \hat\epsilon\|^2$,
$\|x_0 - \hat x_0\|^2 = e^{-\lambda}\|\epsilon - \hat\epsilon\|^2$,
$\|v - \hat v\|^2 = (1 + e^{-\lambda})\|\epsilon - \hat\epsilon\|^2$.
So every weighting is one scalar $w(t)$ multiplying $\|\epsilon - \hat\epsilon\|^2$; a weight $w_x(t)$ on the
$x_0$ error is $w(t) = w_x(t) e^{-\lambda(t)}$, a weight $w_s(t)$ on the score error is $w(t) = w_s(t)/\sigma^2$.
For every linear SDE $g(t)^2/\sigma(t)^2 = -d\lambda/dt$, which ties the likelihood weighting to the ELBO.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Scalar, ScalarLike
from .._misc import as_float
from .._sde import AbstractSDE


def neg_dlog_snr(sde: AbstractSDE, t: ScalarLike) -> Scalar:
    r"""$-d\lambda/dt$ (positive), by forward-mode differentiation of `sde.log_snr`."""
    t = as_float(t)
    return -jax.jvp(sde.log_snr, (t,), (jnp.ones_like(t),))[1]


class AbstractWeighting(eqx.Module):
    r"""Strategy: the weight $w(t)$ of the loss $w(t)\,\|\epsilon - \hat\epsilon\|^2$ (see the module docstring)."""

    @abc.abstractmethod
    def weight(self, sde: AbstractSDE, t: ScalarLike) -> Scalar:
        """The eps-space weight at time `t` of `sde`."""


class SimpleWeighting(AbstractWeighting):
    r"""$w = 1$: DDPM's "simple" loss $\|\epsilon - \hat\epsilon\|^2$ (Ho et al., 2020).

    Equivalent to the $x_0$ weight $e^{\lambda}$ (the SNR)."""

    def weight(self, sde: AbstractSDE, t: ScalarLike) -> Scalar:
        return jnp.ones_like(sde.log_snr(t))


class LikelihoodWeighting(AbstractWeighting):
    r"""$w = \tfrac12 g(t)^2/\sigma(t)^2$: score-space weight $\tfrac12 g^2$ (Song et al., 2021, "Maximum likelihood
    training of score-based diffusion models"). Integrated over $t \in [t_0, T]$ this is the diffusion part of the
    negative ELBO; equal to `ELBOWeighting` because $g^2/\sigma^2 = -\lambda'$ for any linear SDE."""

    def weight(self, sde: AbstractSDE, t: ScalarLike) -> Scalar:
        _, sigma = sde.alpha_sigma(t)
        return 0.5 * sde.diffusion(t) ** 2 / sigma**2


class VWeighting(AbstractWeighting):
    r"""$w = 1 + e^{-\lambda}$: the plain $v$-prediction loss $\|v - \hat v\|^2$, i.e. weight SNR + 1 on the $x_0$ error
    (Salimans & Ho, 2022)."""

    def weight(self, sde: AbstractSDE, t: ScalarLike) -> Scalar:
        return 1.0 + jnp.exp(-sde.log_snr(t))


class EDMWeighting(AbstractWeighting):
    r"""EDM's $x_0$ weight $(\tilde\sigma^2 + \sigma_d^2)/(\tilde\sigma\sigma_d)^2$ with $\tilde\sigma^2 = e^{-\lambda}$
    (Karras et al., 2022, eq. 8), in $\epsilon$ space: $w = 1 + e^{-\lambda}/\sigma_d^2$. EDM's log-normal choice of
    noise levels is a time-sampling matter and is not included."""

    sigma_data: float = 0.5

    def __check_init__(self):
        if not self.sigma_data > 0:
            raise ValueError(f"EDMWeighting needs sigma_data > 0; got sigma_data={self.sigma_data}")

    def weight(self, sde: AbstractSDE, t: ScalarLike) -> Scalar:
        return 1.0 + jnp.exp(-sde.log_snr(t)) / self.sigma_data**2


class AbstractLogSNRWeighting(AbstractWeighting):
    r"""Weightings of Kingma & Gao (2023), "Understanding diffusion objectives as the ELBO with simple data
    augmentation": $\mathcal L_w = \tfrac12 E_t[w(\lambda_t)\,(-d\lambda/dt)\,\|\epsilon - \hat\epsilon\|^2]$, so the
    eps-space weight is $\tfrac12 w(\lambda)(-\lambda')$. When $w$ is non-increasing in $\lambda$ (monotone in $t$)
    the loss is the ELBO of noise-augmented data; $w = 1$ is the ELBO itself."""

    @abc.abstractmethod
    def log_snr_weight(self, lam: Scalar) -> Scalar:
        r"""$w(\lambda)$."""

    def weight(self, sde: AbstractSDE, t: ScalarLike) -> Scalar:
        return 0.5 * self.log_snr_weight(sde.log_snr(t)) * neg_dlog_snr(sde, t)


class ELBOWeighting(AbstractLogSNRWeighting):
    r"""$w(\lambda) = 1$: the continuous-time ELBO (VDM's diffusion loss, $\tfrac12\gamma'(t)$ for VP SDEs)."""

    def log_snr_weight(self, lam: Scalar) -> Scalar:
        return jnp.ones_like(lam)


class SigmoidWeighting(AbstractLogSNRWeighting):
    r"""$w(\lambda) = \mathrm{sigmoid}(b - \lambda)$ with shift $b$ (Kingma & Gao, 2023, sec. 5); monotone."""

    shift: float = 0.0

    def log_snr_weight(self, lam: Scalar) -> Scalar:
        return jax.nn.sigmoid(self.shift - lam)


class EDMMonotoneWeighting(AbstractLogSNRWeighting):
    r"""EDM's weighting in $\lambda$ (log-normal density of $\sigma$ times the $\epsilon$-space EDM weight),
    $\tilde w(\lambda) = N(\lambda; -2P_{mean}, (2P_{std})^2)\,(e^{-\lambda} + \sigma_d^2)/\sigma_d^2$, made monotone
    as in Kingma & Gao (2023): $w(\lambda) = \tilde w(\max(\lambda, \lambda^*))$ with $\lambda^*$ its mode."""

    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2

    def __check_init__(self):
        if not self.sigma_data > 0:
            raise ValueError(f"EDMMonotoneWeighting needs sigma_data > 0; got sigma_data={self.sigma_data}")
        if not self.p_std > 0:
            raise ValueError(f"EDMMonotoneWeighting needs p_std > 0; got p_std={self.p_std}")

    @property
    def mode(self) -> float:
        r"""$\lambda^*$: root of
        $d\log\tilde w/d\lambda = -(\lambda - \mu)/s^2 - e^{-\lambda}/(e^{-\lambda} + \sigma_d^2)$
        (positive to its left, negative to its right), by bisection in Python floats."""
        mu, s, c = -2.0 * self.p_mean, 2.0 * self.p_std, self.sigma_data**2

        def slope(lam):
            return -(lam - mu) / s**2 - 1.0 / (1.0 + c * math.exp(lam))

        lo, hi = mu - 1.0 - 40.0 * s, mu + 40.0 * s
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if slope(mid) > 0 else (lo, mid)
        return 0.5 * (lo + hi)

    def log_snr_weight(self, lam: Scalar) -> Scalar:
        mu, s, c = -2.0 * self.p_mean, 2.0 * self.p_std, self.sigma_data**2
        lam = jnp.maximum(lam, self.mode)
        log_pdf = -0.5 * ((lam - mu) / s) ** 2 - math.log(s * math.sqrt(2.0 * math.pi))
        return jnp.exp(log_pdf) * (jnp.exp(-lam) + c) / c
