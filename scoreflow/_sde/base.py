"""Linear SDEs dx = f(t) x dt + g(t) dW with Gaussian transition x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I)."""

import abc
from collections.abc import Callable

import diffrax
import distrax
import equinox as eqx
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float

from .._custom_types import Conditioning, Scalar, ScalarLike


ScoreFn = Callable[..., Array]


class AbstractSDE(eqx.Module):
    r"""A forward diffusion $dx = f(t) x\,dt + g(t)\,dW$ on $t \in [0, T]$ (Song et al., 2021).

    Every concrete SDE gives its marginal coefficients $(\alpha(t), \sigma(t))$ with
    $x_t \mid x_0 \sim N(\alpha x_0, \sigma^2 I)$, its drift coefficient $f(t)$, diffusion $g(t)$,
    log-SNR $\lambda(t) = 2\log(\alpha/\sigma)$ and prior scale at $T$. It hands diffrax the terms of the
    reverse-time SDE and the probability-flow ODE for a score model; it ships no integrator of its own.

    Attributes: `T` (end time, where the prior sits) and `t0` (default small start time for samplers and
    likelihoods, where the score is still well defined).
    """

    T: eqx.AbstractVar[float]
    t0: eqx.AbstractVar[float]

    @abc.abstractmethod
    def alpha_sigma(self, t: ScalarLike) -> tuple[Scalar, Scalar]:
        r"""Mean scale and standard deviation of $x_t \mid x_0$."""

    @abc.abstractmethod
    def log_snr(self, t: ScalarLike) -> Scalar:
        r"""$\lambda(t) = \log(\alpha^2/\sigma^2)$, decreasing in $t$."""

    @abc.abstractmethod
    def drift_coeff(self, t: ScalarLike) -> Scalar:
        """f(t): the drift is f(t) x."""

    @abc.abstractmethod
    def diffusion(self, t: ScalarLike) -> Scalar:
        """g(t)."""

    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior at t = T."""

    def drift(self, t: ScalarLike, x: Float[Array, "*data"]) -> Float[Array, "*data"]:
        """f(t) x."""
        return self.drift_coeff(t) * x

    def prior(self, shape: tuple[int, ...]) -> distrax.Distribution:
        """The prior N(0, prior_std^2 I) over one example of the given shape (distrax distribution)."""
        shape = tuple(int(s) for s in shape)
        if any(s <= 0 for s in shape):
            raise ValueError(f"`shape` must have positive entries; got shape={shape}")
        base = distrax.Normal(jnp.zeros(shape), jnp.full(shape, self.prior_std()))
        return distrax.Independent(base, reinterpreted_batch_ndims=len(shape))

    def prior_log_prob(self, x: Float[Array, "*data"]) -> Scalar:
        """Log-density of one example under the prior (sums over every axis of `x`)."""
        s = self.prior_std()
        d = x.size
        return -0.5 * jnp.sum((x / s) ** 2) - d * (jnp.log(s) + 0.5 * jnp.log(2 * jnp.pi))

    def pf_vector_field(self, t: ScalarLike, x: Array, score: Array) -> Array:
        r"""Probability-flow ODE velocity $f(t) x - \tfrac12 g(t)^2 s$ for a given score value."""
        g = self.diffusion(t)
        return self.drift_coeff(t) * x - 0.5 * g**2 * score

    def reverse_drift(self, t: ScalarLike, x: Array, score: Array) -> Array:
        r"""Reverse-time SDE drift $f(t) x - g(t)^2 s$ (to be integrated from T down to t0)."""
        g = self.diffusion(t)
        return self.drift_coeff(t) * x - g**2 * score

    def probability_flow_term(self, model: ScoreFn, cond: Conditioning = None) -> diffrax.ODETerm:
        """A diffrax `ODETerm` for the probability-flow ODE of `model` (a score model acting on one example)."""

        def vf(t, x, args):
            return self.pf_vector_field(t, x, model(t, x, cond))

        return diffrax.ODETerm(vf)

    def reverse_sde_terms(
        self, model: ScoreFn, brownian: diffrax.AbstractBrownianPath, cond: Conditioning = None
    ) -> diffrax.MultiTerm:
        """diffrax terms (drift, diffusion) of the reverse-time SDE, integrated with t decreasing."""

        def drift(t, x, args):
            return self.reverse_drift(t, x, model(t, x, cond))

        def diffusion(t, x, args):
            return lx.DiagonalLinearOperator(jnp.broadcast_to(self.diffusion(t), x.shape))

        return diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
