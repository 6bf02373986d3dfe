r"""Ancestral sampling from a D3PM: $x_T \sim p(x_T)$, then $x_{t-1} \sim p_\theta(x_{t-1} \mid x_t)$ for
$t = T, \dots, 1$ (Austin et al., 2021), as one `lax.scan`."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray

from .._custom_types import Conditioning
from .loss import X0Model, _model_logits
from .process import AbstractReverseParameterisation, PosteriorMixture, safe_log, sample_logits
from .transitions import AbstractTransition


def d3pm_sample(
    model: X0Model,
    transition: AbstractTransition,
    shape: tuple[int, ...],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray,
    parameterisation: AbstractReverseParameterisation = PosteriorMixture(),
    return_chain: bool = False,
) -> Int[Array, "..."]:
    r"""One sample $x_0$ of the given data `shape` (integers in $[0, S)$); `vmap` over keys for a batch.

    Every step, the last ($t = 1$) included, draws from $p_\theta(x_{t-1} \mid x_t)$ with clipped Gumbel noise,
    so the samples follow exactly the model whose bound `d3pm_bound_bpd` reports. With `return_chain=True`
    returns the whole chain $(x_T, x_{T-1}, \dots, x_0)$, shape `(T + 1, *shape)`. The model is called without a
    key (no dropout)."""
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 1 for n in shape)):
        raise ValueError(f"`shape` must be a tuple of positive ints (one example's shape); got shape={shape!r}")
    k_prior, k_steps = jax.random.split(key)
    prior = jnp.broadcast_to(safe_log(transition.prior_probs()), shape + (transition.num_states,))
    x_T = sample_logits(prior, key=k_prior)

    def step(x_t, t):
        logits = _model_logits(model, transition, t, x_t, cond, None)
        log_p = parameterisation(transition, t, x_t, logits)
        x_prev = sample_logits(log_p, key=jax.random.fold_in(k_steps, t))
        return x_prev, x_prev

    x_0, chain = jax.lax.scan(step, x_T, jnp.arange(transition.num_steps, 0, -1))
    if return_chain:
        return jnp.concatenate([x_T[None], chain], axis=0)
    return x_0
