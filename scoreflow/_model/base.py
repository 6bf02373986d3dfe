"""The score-model contract."""

import abc

import equinox as eqx
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Conditioning, ScalarLike
from .._sde import AbstractSDE
from .conversions import eps_from_score, v_from_eps_x0, x0_from_score


class AbstractScoreModel(eqx.Module):
    r"""A model of $\nabla_x \log p_t(x)$ for the SDE `sde`, acting on **one** example.

    `model(t, x, cond=None, *, key=None)` returns the score; `t` is a scalar, `x` one example of any shape,
    `cond` an optional conditioning pytree (with a "null" value for classifier-free guidance), `key` an
    optional PRNG key for stochastic models (dropout). `vmap` over `x` (and `cond`) for batches.
    `denoise`, `eps` and `v` are derived from the score through the one set of conversions in
    `scoreflow._model.conversions`.
    """

    sde: eqx.AbstractVar[AbstractSDE]

    @abc.abstractmethod
    def __call__(
        self,
        t: ScalarLike,
        x: Float[Array, "*data"],
        cond: Conditioning = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "*data"]:
        """The score at (t, x)."""

    def denoise(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*data"]:
        r"""$E[x_0 \mid x_t = x]$ (Tweedie): $(x + \sigma^2 s)/\alpha$."""
        alpha, sigma = self.sde.alpha_sigma(t)
        return x0_from_score(x, self(t, x, cond, key=key), alpha, sigma)

    def eps(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*data"]:
        r"""Predicted noise $-\sigma s$."""
        _, sigma = self.sde.alpha_sigma(t)
        return eps_from_score(self(t, x, cond, key=key), sigma)

    def v(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*data"]:
        r"""Predicted velocity $\bar\alpha\epsilon - \bar\sigma x_0$."""
        alpha, sigma = self.sde.alpha_sigma(t)
        s = self(t, x, cond, key=key)
        return v_from_eps_x0(eps_from_score(s, sigma), x0_from_score(x, s, alpha, sigma), alpha, sigma)
