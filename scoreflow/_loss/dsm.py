r"""Denoising score matching with a weighting strategy and a time sampler.

Per example, at time $t$ and noise $\epsilon$:
$\ell = w(t)\,\|\epsilon - \hat\epsilon(t, \alpha x_0 + \sigma\epsilon)\|^2$
(summed over the data axes), minimised in expectation by the true score for every positive $w$
(Vincent, 2011; Song et al., 2021). The batch form estimates $E_{t \sim U[t_0, T]}\,E_{x_0, \epsilon}[\ell]$.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Conditioning, Scalar, ScalarLike
from .._misc import as_float
from .._model import AbstractScoreModel
from .time_sampling import AbstractTimeSampler, UniformTimeSampler
from .weighting import AbstractWeighting


def dsm_loss(
    model: AbstractScoreModel,
    t: ScalarLike,
    x: Float[Array, "*data"],
    eps: Float[Array, "*data"],
    cond: Conditioning = None,
    *,
    weighting: AbstractWeighting,
    key: PRNGKeyArray | None = None,
) -> Scalar:
    r"""Weighted DSM loss of **one** example at a given time and noise.

    **Arguments:** `model` (its `sde` gives $\alpha, \sigma$), `t` (scalar), `x` (clean example $x_0$), `eps`
    (standard normal noise of the shape of `x`), `cond`, `weighting` (an `AbstractWeighting`), `key` (for stochastic
    models). **Returns:** $w(t)\,\|\epsilon - \hat\epsilon\|^2$.
    """
    t = as_float(t)
    if t.ndim != 0:
        raise ValueError(f"`t` must be a scalar; got shape {t.shape}")
    if eps.shape != x.shape:
        raise ValueError(f"`eps` must have the shape of `x`, {x.shape}; got {eps.shape}")
    t = t.astype(x.dtype)
    alpha, sigma = model.sde.alpha_sigma(t)
    x_t = alpha * x + sigma * eps
    eps_hat = model.eps(t, x_t, cond, key=key)
    return weighting.weight(model.sde, t) * jnp.sum((eps - eps_hat) ** 2)


def batch_dsm_loss(
    model: AbstractScoreModel,
    x: Float[Array, " batch *data"],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray,
    weighting: AbstractWeighting,
    time_sampler: AbstractTimeSampler = UniformTimeSampler(),
    t0: ScalarLike | None = None,
) -> Scalar:
    r"""Mean weighted DSM loss over a batch: times from `time_sampler` on $[t_0, T]$ (`t0` defaults to `model.sde.t0`,
    `T` is `model.sde.T`), fresh noise per example, importance weights applied.

    **Arguments:** `model`, `x` (batch of clean examples, leading batch axis), `cond` (batched conditioning or
    None), `key` (one key for the whole batch), `weighting`, `time_sampler`, `t0`. **Returns:** a scalar.
    """
    if x.ndim < 2:
        raise ValueError(
            f"`x` must be a batch of examples, shape (batch, *data) with at least one data axis; got {x.shape}"
        )
    batch = x.shape[0]
    t0 = model.sde.t0 if t0 is None else t0
    k_t, k_eps, k_model = jax.random.split(key, 3)
    t, w = jax.lax.stop_gradient(time_sampler(k_t, batch, t0, model.sde.T))
    t, w = t.astype(x.dtype), w.astype(x.dtype)
    eps = jax.random.normal(k_eps, x.shape, x.dtype)
    keys = jax.random.split(k_model, batch)

    def one(t_i, x_i, eps_i, cond_i, key_i):
        return dsm_loss(model, t_i, x_i, eps_i, cond_i, weighting=weighting, key=key_i)

    losses = jax.vmap(one)(t, x, eps, cond, keys)
    return jnp.mean(w * losses)
