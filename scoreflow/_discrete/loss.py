r"""The D3PM variational bound (in bits/dim), its one-step Monte Carlo training estimate, and the hybrid loss.

$-\log p_\theta(x_0) \le L_{vb} = \underbrace{D_{KL}(q(x_T \mid x_0) \,\|\, p(x_T))}_{L_T}
+ \sum_{t=2}^{T} \underbrace{\mathbb{E}_{q(x_t \mid x_0)} D_{KL}(q(x_{t-1} \mid x_t, x_0) \,\|\,
p_\theta(x_{t-1} \mid x_t))}_{L_{t-1}} \underbrace{- \mathbb{E}_{q(x_1 \mid x_0)} \log p_\theta(x_0 \mid x_1)}_{L_0}$
(Austin et al., 2021, Eq. 1; Sohl-Dickstein et al., 2015; Ho et al., 2020).

A model is any callable `model(s, x_t, cond, *, key)` on **one** example: `s = t / T` a float scalar in (0, 1],
`x_t` integers of the data shape, returning $x_0$-prediction logits of shape `x_t.shape + (num_states,)`.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._custom_types import Conditioning
from .process import AbstractReverseParameterisation, PosteriorMixture, mask_x0_logits, q_posterior_logits, q_sample
from .transitions import AbstractTransition


X0Model = Callable[..., Float[Array, "*data S"]]


def _kl(log_q: Float[Array, "*shape S"], log_p: Float[Array, "*shape S"]) -> Float[Array, "*shape"]:
    q = jnp.exp(log_q)
    return jnp.sum(jnp.where(q > 0, q * (log_q - log_p), 0.0), axis=-1)


def _model_logits(
    model: X0Model,
    transition: AbstractTransition,
    t: Int[ArrayLike, ""],
    x_t: Int[Array, "*data"],
    cond: Conditioning,
    key: PRNGKeyArray | None,
) -> Float[Array, "*data S"]:
    s = jnp.asarray(t).astype(jnp.result_type(float)) / transition.num_steps
    logits = model(s, x_t, cond, key=key)
    expected = x_t.shape + (transition.num_states,)
    if logits.shape != expected:
        raise ValueError(f"the D3PM model must return x0 logits of shape {expected} (x_t.shape + (num_states,)); "
                         f"got {logits.shape}")
    return logits


def _check_x0(x0: Array) -> None:
    if not jnp.issubdtype(x0.dtype, jnp.integer):
        raise TypeError(f"`x0` must be an integer array of category indices; got dtype {x0.dtype}")


def d3pm_prior_term(transition: AbstractTransition, x0: Int[Array, "*data"]) -> Float[Array, ""]:
    r"""$L_T = D_{KL}(q(x_T \mid x_0) \,\|\, p(x_T))$ in nats, summed over the variables of `x0`."""
    _check_x0(x0)
    log_q = jnp.log(jnp.maximum(transition.qbar_probs(transition.num_steps, jax.nn.one_hot(
        x0, transition.num_states, dtype=jnp.result_type(float))), jnp.finfo(jnp.result_type(float)).tiny))
    log_p = jnp.log(jnp.maximum(transition.prior_probs(), jnp.finfo(log_q.dtype).tiny)).astype(log_q.dtype)
    return jnp.sum(_kl(log_q, jnp.broadcast_to(log_p, log_q.shape)))


def _step_term(
    transition: AbstractTransition,
    parameterisation: AbstractReverseParameterisation,
    t: Int[ArrayLike, ""],
    x_t: Int[Array, "*data"],
    x0: Int[Array, "*data"],
    logits: Float[Array, "*data S"],
) -> Float[Array, ""]:
    log_p = parameterisation(transition, t, x_t, logits)
    log_q = q_posterior_logits(transition, t, x_t, jax.nn.one_hot(x0, transition.num_states, dtype=logits.dtype))
    kl = _kl(log_q, log_p)
    nll = -jnp.take_along_axis(log_p, x0[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(jnp.asarray(t) == 1, nll, kl))


def d3pm_vb_term(
    model: X0Model,
    transition: AbstractTransition,
    x0: Int[Array, "*data"],
    t: Int[ArrayLike, ""],
    x_t: Int[Array, "*data"],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray | None = None,
    parameterisation: AbstractReverseParameterisation = PosteriorMixture(),
) -> Float[Array, ""]:
    r"""One term of the bound at a given $x_t$, in nats summed over variables: for $t \ge 2$
    $D_{KL}(q(x_{t-1} \mid x_t, x_0) \,\|\, p_\theta(x_{t-1} \mid x_t))$, for $t = 1$ $-\log p_\theta(x_0 \mid x_1)$.
    `key` is passed to the model (dropout)."""
    _check_x0(x0)
    logits = _model_logits(model, transition, t, x_t, cond, key)
    return _step_term(transition, parameterisation, t, x_t, x0, logits)


def _terms(
    model: X0Model,
    transition: AbstractTransition,
    x0: Int[Array, "*data"],
    cond: Conditioning,
    key: PRNGKeyArray,
    parameterisation: AbstractReverseParameterisation,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(single-sample bound estimate, cross-entropy), both in bits/dim, at one shared draw of (t, x_t)."""
    _check_x0(x0)
    k_t, k_x, k_model = jax.random.split(key, 3)
    t = jax.random.randint(k_t, (), 1, transition.num_steps + 1)
    x_t = q_sample(transition, t, x0, key=k_x)
    logits = _model_logits(model, transition, t, x_t, cond, k_model)
    bits = math.log(2.0) * x0.size
    vb = (transition.num_steps * _step_term(transition, parameterisation, t, x_t, x0, logits)
          + d3pm_prior_term(transition, x0)) / bits
    log_p0 = jax.nn.log_softmax(mask_x0_logits(transition, logits), axis=-1)
    ce = -jnp.sum(jnp.take_along_axis(log_p0, x0[..., None], axis=-1)) / bits
    return vb, ce


def d3pm_loss(
    model: X0Model,
    transition: AbstractTransition,
    x0: Int[Array, "*data"],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray,
    parameterisation: AbstractReverseParameterisation = PosteriorMixture(),
) -> Float[Array, ""]:
    r"""Unbiased one-sample estimate of the bound $L_{vb}$ in bits/dim for one example:
    $(T\, L_{t-1}(x_t) + L_T) / (D \log 2)$ with $t \sim \mathcal U\{1..T\}$, $x_t \sim q(x_t \mid x_0)$.
    `vmap` over examples (and keys) and average for a batch loss."""
    return _terms(model, transition, x0, cond, key, parameterisation)[0]


def d3pm_cross_entropy(
    model: X0Model,
    transition: AbstractTransition,
    x0: Int[Array, "*data"],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray,
    parameterisation: AbstractReverseParameterisation = PosteriorMixture(),
) -> Float[Array, ""]:
    r"""The auxiliary loss $-\log_2 \tilde p_\theta(x_0 \mid x_t)$ per variable (bits/dim), at the same draw of
    $(t, x_t)$ as `d3pm_loss` with the same key."""
    return _terms(model, transition, x0, cond, key, parameterisation)[1]


def d3pm_hybrid_loss(
    model: X0Model,
    transition: AbstractTransition,
    x0: Int[Array, "*data"],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray,
    coeff: float,
    parameterisation: AbstractReverseParameterisation = PosteriorMixture(),
) -> Float[Array, ""]:
    r"""$L_\lambda = L_{vb} + \lambda\, \mathbb E\,[-\log \tilde p_\theta(x_0 \mid x_t)]$ (Austin et al., 2021, Eq. 5):
    `d3pm_loss + coeff * d3pm_cross_entropy` at one shared $(t, x_t)$, both in bits/dim.

    The bound is weighted fully and the cross-entropy by `coeff` (some re-implementations swap the two, which
    trains on the cross-entropy alone when the coefficient is 0). Here $L_{vb}$ is the whole bound, so D3PM's
    reference value $\lambda = 0.001$, applied there to the single-step term $L_{t-1}$, is `coeff = 0.001 * T`."""
    vb, ce = _terms(model, transition, x0, cond, key, parameterisation)
    return vb + coeff * ce


def d3pm_bound_terms(
    model: X0Model,
    transition: AbstractTransition,
    x0: Int[Array, "*data"],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray,
    parameterisation: AbstractReverseParameterisation = PosteriorMixture(),
) -> tuple[Float[Array, ""], Float[Array, " T"]]:
    r"""$(L_T, [L_0, L_1, \dots, L_{T-1}])$ in nats for one example, each step term at one draw of $x_t$
    (a `lax.scan` over $t = 1..T$, one model call per step)."""
    _check_x0(x0)

    def step(total, t):
        x_t = q_sample(transition, t, x0, key=jax.random.fold_in(key, t))
        # evaluation: the model gets no key (no dropout)
        return total, d3pm_vb_term(model, transition, x0, t, x_t, cond, parameterisation=parameterisation)

    _, terms = jax.lax.scan(step, None, jnp.arange(1, transition.num_steps + 1))
    return d3pm_prior_term(transition, x0), terms


def d3pm_bound_bpd(
    model: X0Model,
    transition: AbstractTransition,
    x0: Int[Array, "*data"],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray,
    parameterisation: AbstractReverseParameterisation = PosteriorMixture(),
) -> Float[Array, ""]:
    r"""The bound $L_{vb}$ in bits/dim for one example, with every one of the $T$ terms evaluated (one draw of
    $x_t$ each): an upper bound, in expectation, on $-\log_2 p_\theta(x_0) / D$."""
    prior, terms = d3pm_bound_terms(model, transition, x0, cond, key=key, parameterisation=parameterisation)
    return (prior + jnp.sum(terms)) / (math.log(2.0) * x0.size)
