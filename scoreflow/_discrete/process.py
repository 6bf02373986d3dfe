r"""The D3PM forward process $q(x_t \mid x_0)$, its posterior $q(x_{t-1} \mid x_t, x_0)$, and the model's reverse step
$p_\theta(x_{t-1} \mid x_t)$ built from an $x_0$-prediction $\tilde p_\theta(x_0 \mid x_t)$ (Austin et al., 2021).

All functions act elementwise on integer arrays of any shape (one categorical variable per entry) and return
probabilities or logits with a trailing axis of size `transition.num_states`.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .transitions import AbstractTransition


def safe_log(p: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """$\\log \\max(p, \\text{tiny})$: finite where $p = 0$ (about -708 in float64, -87 in float32)."""
    return jnp.log(jnp.maximum(p, jnp.finfo(p.dtype).tiny))


def sample_logits(logits: Float[Array, "*shape S"], *, key: PRNGKeyArray) -> Int[Array, "*shape"]:
    r"""Gumbel-max sampling, $\arg\max_i (\ell_i + g_i)$ with $g = -\log(-\log u)$ and $u$ clipped to
    $[\text{tiny}, 1 - \epsilon]$ so that $g$ is always finite."""
    dtype = logits.dtype
    u = jax.random.uniform(key, logits.shape, dtype)
    u = jnp.clip(u, jnp.finfo(dtype).tiny, 1.0 - jnp.finfo(dtype).eps)
    return jnp.argmax(logits - jnp.log(-jnp.log(u)), axis=-1)


def _one_hot(x: Int[Array, "*shape"], transition: AbstractTransition, dtype) -> Float[Array, "*shape S"]:
    return jax.nn.one_hot(x, transition.num_states, dtype=dtype)


def q_probs(
    transition: AbstractTransition, t: Int[ArrayLike, ""], x0: Int[Array, "*shape"]
) -> Float[Array, "*shape S"]:
    r"""$q(x_t \mid x_0) = \mathrm{Cat}(e_{x_0}^\top \bar Q_t)$ for $t \in \{0, \dots, T\}$."""
    return transition.qbar_probs(t, _one_hot(x0, transition, jnp.result_type(float)))


def q_sample(
    transition: AbstractTransition, t: Int[ArrayLike, ""], x0: Int[Array, "*shape"], *, key: PRNGKeyArray
) -> Int[Array, "*shape"]:
    r"""A draw of $x_t \sim q(x_t \mid x_0)$."""
    return sample_logits(safe_log(q_probs(transition, t, x0)), key=key)


def q_posterior_logits(
    transition: AbstractTransition, t: Int[ArrayLike, ""], x_t: Int[Array, "*shape"], p0: Float[Array, "*shape S"]
) -> Float[Array, "*shape S"]:
    r"""Normalised log-probabilities $\log \sum_{x_0} q(x_{t-1}, x_t \mid x_0)\, p_0(x_0)$ over $x_{t-1}$, with
    $q(x_{t-1}, x_t \mid x_0) = [Q_t]_{x_{t-1}, x_t} [\bar Q_{t-1}]_{x_0, x_{t-1}}$, for $1 \le t \le T$.

    A one-hot $p_0 = e_{x_0}$ gives the exact posterior $q(x_{t-1} \mid x_t, x_0)$ (Bayes' rule; Austin et al.,
    2021, Eq. 3). Computed as $\log [Q_t]_{:, x_t} + \log (p_0^\top \bar Q_{t-1})$: no $S \times S$ product for
    structured transitions."""
    t = jnp.asarray(t)
    logits = safe_log(transition.q_column(t, x_t).astype(p0.dtype)) + safe_log(transition.qbar_probs(t - 1, p0))
    return jax.nn.log_softmax(logits, axis=-1)


def q_posterior_probs(
    transition: AbstractTransition, t: Int[ArrayLike, ""], x_t: Int[Array, "*shape"], x0: Int[Array, "*shape"]
) -> Float[Array, "*shape S"]:
    r"""$q(x_{t-1} \mid x_t, x_0)$ for $1 \le t \le T$."""
    p0 = _one_hot(x0, transition, jnp.result_type(float))
    return jnp.exp(q_posterior_logits(transition, t, x_t, p0))


def mask_x0_logits(transition: AbstractTransition, x0_logits: Float[Array, "*shape S"]) -> Float[Array, "*shape S"]:
    """Sets the logits of states data cannot take ([MASK]) to -inf, so $\\tilde p_\\theta(x_0)$ is 0 there."""
    return jnp.where(jnp.broadcast_to(transition.data_mask(), x0_logits.shape), x0_logits, -jnp.inf)


class AbstractReverseParameterisation(eqx.Module):
    r"""How $p_\theta(x_{t-1} \mid x_t)$ is built from the $x_0$-prediction logits (of $\tilde p_\theta(x_0 \mid x_t)$).

    Both concrete choices give $q(x_{t-1} \mid x_t, x_0)$ when $\tilde p_\theta$ is a point mass on $x_0$, and they
    coincide for the absorbing transition. At $t = 1$ ($\bar Q_0 = I$) they give
    $p_\theta(x_0 \mid x_1) \propto [Q_1]_{x_0, x_1} w(x_0)$, the same formula as every other step, so the bound's
    reconstruction term and the last sampling step use one model distribution.
    """

    @abc.abstractmethod
    def __call__(
        self,
        transition: AbstractTransition,
        t: Int[ArrayLike, ""],
        x_t: Int[Array, "*shape"],
        x0_logits: Float[Array, "*shape S"],
    ) -> Float[Array, "*shape S"]:
        r"""Normalised log-probabilities of $p_\theta(x_{t-1} \mid x_t)$ over $x_{t-1}$ ($1 \le t \le T$)."""


class PosteriorMixture(AbstractReverseParameterisation):
    r"""$p_\theta(x_{t-1} \mid x_t) = \sum_{x_0} q(x_{t-1} \mid x_t, x_0)\, \tilde p_\theta(x_0 \mid x_t)$.

    Exact when $\tilde p_\theta(x_0 \mid x_t)$ is the true posterior $q(x_0 \mid x_t)$, the minimiser of the auxiliary
    cross-entropy of the hybrid loss. Computed as the joint form below with weights
    $w(x_0) \propto \tilde p_\theta(x_0 \mid x_t) / q(x_t \mid x_0)$ over the $x_0$ with $q(x_t \mid x_0) > 0$
    (for an $x_t$ that no $x_0$ reaches, which $q$ never produces, it returns the joint form)."""

    def __call__(
        self,
        transition: AbstractTransition,
        t: Int[ArrayLike, ""],
        x_t: Int[Array, "*shape"],
        x0_logits: Float[Array, "*shape S"],
    ) -> Float[Array, "*shape S"]:
        log_p0 = jax.nn.log_softmax(mask_x0_logits(transition, x0_logits), axis=-1)
        like = transition.qbar_column(t, x_t).astype(x0_logits.dtype)
        log_w = jnp.where(like > 0, log_p0 - safe_log(like), -jnp.inf)
        # an x_t that no x0 can reach (probability 0 under q) falls back to the joint form: finite, never NaN
        reachable = jnp.any(jnp.isfinite(log_w), axis=-1, keepdims=True)
        log_w = jnp.where(jnp.broadcast_to(reachable, log_w.shape), log_w, log_p0)
        return q_posterior_logits(transition, t, x_t, jax.nn.softmax(log_w, axis=-1))


class JointMixture(AbstractReverseParameterisation):
    r"""$p_\theta(x_{t-1} \mid x_t) \propto \sum_{x_0} q(x_{t-1}, x_t \mid x_0)\, \tilde p_\theta(x_0 \mid x_t)$,
    Eq. 4 of Austin et al. (2021) and their reference code. Equals `PosteriorMixture` with
    $\tilde p_\theta(x_0 \mid x_t)$ reweighted by $q(x_t \mid x_0)$; its optimal $\tilde p_\theta$ is not the true
    posterior (except for absorbing transitions, where $q(x_t = m \mid x_0)$ does not depend on $x_0$)."""

    def __call__(
        self,
        transition: AbstractTransition,
        t: Int[ArrayLike, ""],
        x_t: Int[Array, "*shape"],
        x0_logits: Float[Array, "*shape S"],
    ) -> Float[Array, "*shape S"]:
        p0 = jax.nn.softmax(mask_x0_logits(transition, x0_logits), axis=-1)
        return q_posterior_logits(transition, t, x_t, p0)
