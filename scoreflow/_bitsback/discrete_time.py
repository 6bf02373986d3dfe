r"""Discrete-time evaluation of a continuous VP model: $T$ steps $t_i = i/T$, Gaussian posteriors and reverse
steps, and the finite-$T$ VDM bound (Kingma et al., 2021, eqs. 11-13).

With $\gamma_i = \gamma(t_i)$, $\alpha_i^2 = \mathrm{sigmoid}(-\gamma_i)$, $\sigma_i^2 = \mathrm{sigmoid}(\gamma_i)$ and
$c_i = 1 - \mathrm{SNR}_{i+1}/\mathrm{SNR}_i = -\mathrm{expm1}(\gamma_i - \gamma_{i+1})$:

* forward step $q(z_{i+1} \mid z_i) = N(\alpha_{i+1}/\alpha_i\, z_i,\ \sigma_{i+1}^2 c_i)$;
* posterior $q(z_i \mid z_{i+1}, x) = N(a_i z_{i+1} + b_i x,\ \sigma_i^2 c_i)$ with
  $a_i = (\alpha_{i+1}/\alpha_i)\,\sigma_i^2/\sigma_{i+1}^2$ and $b_i = \alpha_i c_i$;
* the model's step $p(z_i \mid z_{i+1}) = q(z_i \mid z_{i+1}, x = \hat x(z_{i+1}))$ with
  $\hat x = (z - \sigma\hat\epsilon)/\alpha$;
* the bound $-\log p(x) \le KL(q(z_T \mid x) \| N(0, I)) + E\,[-\log p(x \mid z_0)]
  + \sum_{i=1}^{T} E_{q(z_{t_i} \mid x)} \tfrac12 \mathrm{expm1}(\gamma_i - \gamma_{i-1})
  \|\epsilon - \hat\epsilon\|^2$,
  whose last sum tends to `vdm_vlb`'s $\tfrac12\int_0^1 \gamma'(t) E\|\epsilon - \hat\epsilon\|^2 dt$ as $T \to \infty$.

Everything here is float64 when `jax_enable_x64` is on (the codec requires it).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._loss.decoder import AbstractDecoder, DiscretisedGaussianDecoder, check_num_levels
from .._loss.vdm import VLBTerms, _check_data, _schedule_of
from .._model import AbstractScoreModel


def _check_steps(num_steps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"`num_steps` must be an int >= 1; got {num_steps!r}")


def vp_gammas(model: AbstractScoreModel, num_steps: int) -> Float[Array, " steps"]:
    r"""$\gamma(t_i)$ at $t_i = i/T$, $i = 0, \dots, T$, from the VP schedule of `model` (checked increasing)."""
    _check_steps(num_steps)
    schedule = _schedule_of(model)
    t = jnp.arange(num_steps + 1, dtype=jnp.result_type(float)) / num_steps
    g = jax.vmap(schedule.gamma)(t)
    return g


class VPSteps(NamedTuple):
    r"""Per-step coefficients (numpy float64) of the $T$-step VP chain; arrays over $i = 0..T$ (`alpha`, `sigma`)
    or $i = 0..T-1$ (`c`, `a`, `b`, `rev_std` for the step $z_{i+1} \to z_i$; `fwd_std[i]` for $z_i \to z_{i+1}$)."""

    gamma: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    c: np.ndarray
    a: np.ndarray
    b: np.ndarray
    rev_std: np.ndarray
    fwd_std: np.ndarray
    fwd_coef: np.ndarray


def vp_steps(gammas) -> VPSteps:
    """`VPSteps` from $\\gamma_0 < \\dots < \\gamma_T$ (any array; computed in numpy float64)."""
    g = np.asarray(gammas, dtype=np.float64)
    if g.ndim != 1 or g.size < 2 or not np.all(np.isfinite(g)):
        raise ValueError(f"`gammas` must be a finite 1-D array of length T + 1 >= 2; got shape {g.shape}")
    if not np.all(np.diff(g) > 0):
        raise ValueError(
            f"`gammas` must be strictly increasing (gamma = -log SNR of a VP schedule); got min step {np.diff(g).min()}"
        )
    log_a2 = -np.logaddexp(0.0, g)  # log sigmoid(-g)
    log_s2 = -np.logaddexp(0.0, -g)  # log sigmoid(g)
    alpha, sigma = np.exp(0.5 * log_a2), np.exp(0.5 * log_s2)
    c = -np.expm1(g[:-1] - g[1:])
    a = np.exp(0.5 * (log_a2[1:] - log_a2[:-1]) + log_s2[:-1] - log_s2[1:])
    b = alpha[:-1] * c
    rev_std = sigma[:-1] * np.sqrt(c)
    fwd_std = sigma[1:] * np.sqrt(c)
    fwd_coef = np.exp(0.5 * (log_a2[1:] - log_a2[:-1]))
    return VPSteps(g, alpha, sigma, c, a, b, rev_std, fwd_std, fwd_coef)


def vp_posterior(
    gammas: Float[Array, " steps"], i: Int[ArrayLike, ""], x: Float[Array, "*data"], z: Float[Array, "*data"]
) -> tuple[Float[Array, "*data"], Float[Array, ""]]:
    r"""Mean and std of $q(z_{t_{i-1}} \mid z_{t_i} = z, x)$ for $1 \le i \le T$."""
    g_s, g_t = gammas[i - 1], gammas[i]
    c = -jnp.expm1(g_s - g_t)
    log_a2s, log_a2t = jax.nn.log_sigmoid(-g_s), jax.nn.log_sigmoid(-g_t)
    log_s2s, log_s2t = jax.nn.log_sigmoid(g_s), jax.nn.log_sigmoid(g_t)
    a = jnp.exp(0.5 * (log_a2t - log_a2s) + log_s2s - log_s2t)
    b = jnp.exp(0.5 * log_a2s) * c
    return a * z + b * x, jnp.exp(0.5 * log_s2s) * jnp.sqrt(c)


def vp_reverse(
    model: AbstractScoreModel,
    gammas: Float[Array, " steps"],
    i: Int[ArrayLike, ""],
    z: Float[Array, "*data"],
    cond=None,
) -> tuple[Float[Array, "*data"], Float[Array, ""]]:
    r"""Mean and std of the model's $p(z_{t_{i-1}} \mid z_{t_i} = z) = q(z_{t_{i-1}} \mid z, \hat x(z))$,
    $\hat x = (z - \sigma_i\hat\epsilon(t_i, z))/\alpha_i$, for $1 \le i \le T$ (one example)."""
    num_steps = gammas.shape[0] - 1
    t = jnp.asarray(i, gammas.dtype) / num_steps
    eps_hat = model.eps(t, z, cond)
    g_t = gammas[i]
    x_hat = (z - jnp.sqrt(jax.nn.sigmoid(g_t)) * eps_hat) / jnp.sqrt(jax.nn.sigmoid(-g_t))
    return vp_posterior(gammas, i, x_hat, z)


class DiscreteVLBTerms(NamedTuple):
    """`VLBTerms` of the $T$-step bound (bits/dim) and the $T$ per-step diffusion terms (bits/dim, $i = 1..T$)."""

    terms: VLBTerms
    steps: Float[Array, " T"]


_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(64)


def discrete_vdm_terms(
    model: AbstractScoreModel,
    x: Float[Array, "*data"],
    eps: Float[Array, " num_steps *data"],
    cond=None,
    *,
    num_levels: int,
    decoder: AbstractDecoder = DiscretisedGaussianDecoder(),
) -> DiscreteVLBTerms:
    r"""The $T$-step VDM bound of **one** example at given noise: step $i$ uses $z_{t_i} = \alpha_i x + \sigma_i
    \epsilon_i$ (`eps[i-1]`) and contributes $\tfrac12\mathrm{expm1}(\gamma_i - \gamma_{i-1})
    \|\epsilon_i - \hat\epsilon(t_i, z_{t_i})\|^2$ (the Gaussian KL in closed form). The prior KL is exact and the
    reconstruction $E_{q(z_0 \mid x)}[-\log p(x \mid z_0)]$ is integrated per dimension by 64-point Gauss-Hermite
    quadrature (exact to float precision for these smooth integrands). $T$ = `eps.shape[0]`; bits/dim."""
    check_num_levels(num_levels)
    x = _check_data(x)
    if eps.shape[1:] != x.shape:
        raise ValueError(f"`eps` must have shape (T, *x.shape) = (T, {', '.join(map(str, x.shape))}); got {eps.shape}")
    num_steps = eps.shape[0]
    gammas = vp_gammas(model, num_steps).astype(x.dtype)
    scale = 1.0 / (x.size * math.log(2.0))

    def step(i, e):
        g_t = gammas[i]
        z = jnp.sqrt(jax.nn.sigmoid(-g_t)) * x + jnp.sqrt(jax.nn.sigmoid(g_t)) * e
        eps_hat = model.eps(jnp.asarray(i, x.dtype) / num_steps, z, cond)
        return 0.5 * jnp.expm1(g_t - gammas[i - 1]) * jnp.sum((e - eps_hat) ** 2)

    steps = jax.vmap(step)(jnp.arange(1, num_steps + 1), eps) * scale
    g_1 = gammas[-1]
    prior = 0.5 * jnp.sum(jax.nn.sigmoid(-g_1) * (x**2 - 1.0) + jax.nn.softplus(-g_1)) * scale
    g_0 = gammas[0]
    alpha_0, sigma_0 = jnp.sqrt(jax.nn.sigmoid(-g_0)), jnp.sqrt(jax.nn.sigmoid(g_0))
    nodes = jnp.asarray(_GH_NODES, x.dtype)
    weights = jnp.asarray(_GH_WEIGHTS / math.sqrt(2 * math.pi), x.dtype)
    z0 = alpha_0 * x[None] + sigma_0 * nodes.reshape((-1,) + (1,) * x.ndim)
    logp = jax.vmap(lambda z: decoder.log_prob(x, z, alpha_0, sigma_0, num_levels))(z0)
    reconstruction = -jnp.sum(jnp.tensordot(weights, logp, axes=1)) * scale
    diffusion = jnp.sum(steps)
    return DiscreteVLBTerms(VLBTerms(diffusion, prior, reconstruction, diffusion + prior + reconstruction), steps)


def discrete_vdm_vlb(
    model: AbstractScoreModel,
    x: Float[Array, "*data"],
    cond=None,
    *,
    num_steps: int,
    key: PRNGKeyArray,
    num_levels: int,
    decoder: AbstractDecoder = DiscretisedGaussianDecoder(),
) -> DiscreteVLBTerms:
    r"""The $T$-step VDM bound (bits/dim) of one example with one draw of $z_{t_i} \sim q(z_{t_i} \mid x)$ per step:
    `discrete_vdm_terms` at $\epsilon \sim N(0, I)$ from `key`. An unbiased estimate of the negative ELBO of the
    $T$-step model that the bits-back codec (`VDMCodec`) attains."""
    _check_steps(num_steps)
    eps = jax.random.normal(key, (num_steps,) + x.shape, x.dtype)
    return discrete_vdm_terms(model, x, eps, cond, num_levels=num_levels, decoder=decoder)
