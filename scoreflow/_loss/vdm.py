r"""The continuous-time variational bound of Variational Diffusion Models (Kingma et al., 2021), in bits/dim.

For discrete data $x \in [-1, 1]^d$ on $L$ levels and a VP process with $\gamma(t) = -\log\mathrm{SNR}(t)$:
$-\log p(x) \le \tfrac12 E_{t \sim U[0,1], \epsilon}[\gamma'(t)\|\epsilon - \hat\epsilon(z_t, t)\|^2]$ (diffusion)
$+ KL(q(z_1 \mid x)\,\|\,N(0, I))$ (prior) $+ E_{q(z_0 \mid x)}[-\log p(x \mid z_0)]$ (reconstruction),
each divided by $d \log 2$. Given the endpoints $\gamma(0), \gamma(1)$, the expectation of the diffusion term does not
depend on the schedule in between (for models that see $t$ only through the SNR); its variance does, and VDM
minimises that variance over the schedule's interior.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._custom_types import Conditioning, Scalar, ScalarLike
from .._misc import as_float
from .._model import AbstractScoreModel
from .._schedule import AbstractSchedule, LearnedSchedule
from .._sde import VPSDE
from .decoder import AbstractDecoder, DiscretisedGaussianDecoder, check_num_levels
from .time_sampling import AbstractTimeSampler, AntitheticTimeSampler


class VLBTerms(NamedTuple):
    """The VLB's components and their sum, in bits per dimension (scalars per example, or arrays per batch)."""

    diffusion: Array
    prior: Array
    reconstruction: Array
    total: Array


def _schedule_of(model: AbstractScoreModel) -> AbstractSchedule:
    if not isinstance(model.sde, VPSDE):
        raise TypeError(f"`model.sde` must be a VPSDE for the VDM bound; got {type(model.sde).__name__}")
    return model.sde.schedule


def _check_data(x: Array, name: str = "x") -> Array:
    if x.ndim < 1:
        raise ValueError(f"`{name}` must be one example with at least one axis; got a scalar")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating array with values in [-1, 1]; got dtype {x.dtype}")
    return eqx.error_if(x, jnp.any(jnp.abs(x) > 1.0 + 1e-6), f"`{name}` must lie in [-1, 1]")


def vdm_vlb(
    model: AbstractScoreModel,
    x: Float[Array, "*data"],
    t: ScalarLike,
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray,
    num_levels: int,
    decoder: AbstractDecoder = DiscretisedGaussianDecoder(),
) -> VLBTerms:
    r"""One-sample VLB of **one** example at time `t`, in bits/dim.

    Diffusion term $\tfrac12\gamma'(t)\|\epsilon - \hat\epsilon\|^2$ with $\hat\epsilon$ from `model.eps`; prior KL
    in closed form, per dimension $\tfrac12(\alpha_1^2(x^2 - 1) + \mathrm{softplus}(-\gamma_1))$; reconstruction
    $-\log p(x \mid z_0)$ at one $z_0 = \alpha_0 x + \sigma_0\epsilon_0$ under `decoder`.

    **Arguments:** `model` (a score model whose `sde` is a `VPSDE`, any schedule, learnable included), `x` (one
    example on `num_levels` levels in [-1, 1]), `t` (scalar in [0, 1]), `cond`, `key` (noise for $z_t$, $z_0$ and
    the model), `num_levels` (int >= 2), `decoder`. **Returns:** `VLBTerms` of scalars.
    """
    check_num_levels(num_levels)
    x = _check_data(x)
    t = as_float(t)
    if t.ndim != 0:
        raise ValueError(f"`t` must be a scalar; got shape {t.shape}")
    t = t.astype(x.dtype)
    schedule = _schedule_of(model)
    k_eps, k_eps0, k_model = jax.random.split(key, 3)
    scale = 1.0 / (x.size * math.log(2.0))

    gamma_t, dgamma_t = schedule.gamma_and_dgamma(t)
    eps = jax.random.normal(k_eps, x.shape, x.dtype)
    z_t = jnp.sqrt(jax.nn.sigmoid(-gamma_t)) * x + jnp.sqrt(jax.nn.sigmoid(gamma_t)) * eps
    eps_hat = model.eps(t, z_t, cond, key=k_model)
    diffusion = 0.5 * dgamma_t * jnp.sum((eps - eps_hat) ** 2)

    gamma_1 = schedule.gamma(jnp.ones((), x.dtype))
    prior = 0.5 * jnp.sum(jax.nn.sigmoid(-gamma_1) * (x**2 - 1.0) + jax.nn.softplus(-gamma_1))

    gamma_0 = schedule.gamma(jnp.zeros((), x.dtype))
    alpha_0, sigma_0 = jnp.sqrt(jax.nn.sigmoid(-gamma_0)), jnp.sqrt(jax.nn.sigmoid(gamma_0))
    z_0 = alpha_0 * x + sigma_0 * jax.random.normal(k_eps0, x.shape, x.dtype)
    reconstruction = -jnp.sum(decoder.log_prob(x, z_0, alpha_0, sigma_0, num_levels))

    diffusion, prior, reconstruction = diffusion * scale, prior * scale, reconstruction * scale
    return VLBTerms(diffusion, prior, reconstruction, diffusion + prior + reconstruction)


def batch_vdm_vlb(
    model: AbstractScoreModel,
    x: Float[Array, " batch *data"],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray,
    num_levels: int,
    time_sampler: AbstractTimeSampler = AntitheticTimeSampler(),
    decoder: AbstractDecoder = DiscretisedGaussianDecoder(),
) -> VLBTerms:
    r"""Per-example VLB terms (arrays of shape `(batch,)`, bits/dim) with times drawn by `time_sampler` on [0, 1].

    Importance weights of the sampler multiply the diffusion term. Take `.total.mean()` for a training loss.
    """
    if x.ndim < 2:
        raise ValueError(
            f"`x` must be a batch of examples, shape (batch, *data) with at least one data axis; got {x.shape}"
        )
    batch = x.shape[0]
    k_t, k_ex = jax.random.split(key)
    t, w = jax.lax.stop_gradient(time_sampler(k_t, batch, 0.0, 1.0))
    keys = jax.random.split(k_ex, batch)

    def one(x_i, t_i, cond_i, key_i):
        return vdm_vlb(model, x_i, t_i, cond_i, key=key_i, num_levels=num_levels, decoder=decoder)

    terms = jax.vmap(one)(x, t.astype(x.dtype), cond, keys)
    diffusion = w.astype(x.dtype) * terms.diffusion
    return VLBTerms(diffusion, terms.prior, terms.reconstruction, diffusion + terms.prior + terms.reconstruction)


def learned_schedule_interior(model: AbstractScoreModel) -> tuple[PyTree, ...]:
    r"""The interior (shape) parameters of a `LearnedSchedule` in `model.sde.schedule`, endpoints excluded.

    A `where` function in the sense of `eqx.tree_at`; the default for `vdm_loss_and_grads`.
    """
    schedule = model.sde.schedule if isinstance(model.sde, VPSDE) else None
    if not isinstance(schedule, LearnedSchedule):
        raise ValueError(
            "`model` must have a VPSDE with a LearnedSchedule for the variance-minimisation step; got "
            f"{type(model.sde).__name__}({type(getattr(model.sde, 'schedule', None)).__name__})"
        )
    return (schedule.w1, schedule.b1, schedule.w2, schedule.b2, schedule.w3)


def vdm_loss_and_grads(
    model: AbstractScoreModel,
    x: Float[Array, " batch *data"],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray,
    num_levels: int,
    time_sampler: AbstractTimeSampler = AntitheticTimeSampler(),
    decoder: AbstractDecoder = DiscretisedGaussianDecoder(),
    variance_params: Callable[[AbstractScoreModel], PyTree] = learned_schedule_interior,
) -> tuple[Scalar, PyTree]:
    r"""Mean VLB (bits/dim) and VDM's gradients: the variance-minimising ones for the schedule's interior.

    With per-example totals $L_i$ and diffusion terms $D_i$ of one forward pass, returns
    `(mean(L), grads)` where `grads` (a pytree like `eqx.filter_grad` gives) holds $\nabla\,\mathrm{mean}(L)$ for the
    model, the endpoints and everything else, and $\nabla\,\mathrm{mean}(D^2)$ for the leaves picked by
    `variance_params` (default: the interior of a `LearnedSchedule`). Since $E[D]$ does not depend on those
    leaves, this descends the variance of the VLB estimator (Kingma et al., 2021, sec. 5.2 and appendix I.2).
    Both gradients come from one forward pass and one batched backward pass (`jax.vjp` under `vmap`).
    """
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def terms(p):
        out = batch_vdm_vlb(
            eqx.combine(p, static), x, cond, key=key, num_levels=num_levels,
            time_sampler=time_sampler, decoder=decoder,
        )
        return out.total, out.diffusion

    (total, diffusion), vjp = jax.vjp(terms, params)
    batch = total.shape[0]
    # Both cotangents through one vmapped backward pass: [d mean(L), d mean(D^2)].
    ct_total = jnp.stack([jnp.full_like(total, 1.0 / batch), jnp.zeros_like(total)])
    ct_diffusion = jnp.stack([jnp.zeros_like(diffusion), 2.0 * diffusion / batch])
    (both,) = jax.vmap(vjp)((ct_total, ct_diffusion))
    g_vlb, g_var = jax.tree.map(lambda g: g[0], both), jax.tree.map(lambda g: g[1], both)
    grads = eqx.tree_at(variance_params, g_vlb, replace=variance_params(g_var))
    return jnp.mean(total), grads
