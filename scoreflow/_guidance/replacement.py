r"""Inpainting by replacement (Song et al., 2021, "Score-based generative modeling through SDEs", app. I.2):
a sampler step hook that re-imposes the observed part, forward-noised."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._misc import as_float
from .._sde import AbstractSDE
from ._state_key import state_key
from .observation import AbstractObservation


class Replacement(eqx.Module):
    r"""`hook(t, x)` for `sf.sample(..., hook=Replacement(...))`: after every step, the observed part $A x$ of the
    state is replaced by a fresh draw from $q(z_t \mid y) = N(\alpha_t y, \sigma_t^2 A A^\top)$, the forward-noised
    observation ($\alpha_t y + \sigma_t A\epsilon$, $\epsilon \sim N(0, I)$), not by the clean $y$; the rest of the
    state is kept ($x + A^+(z_t - A x)$). At $t = 0$ (the samplers' last call) it is $y$ itself, exactly.

    The hook interface gives no key, so the noise comes from `key` folded with the bits of $(t, x)$: a different
    stream for each example and step, reproducible. The observation noise $\nu$ is ignored ($y$ is treated as
    $A x_0$). Replacement samples $x_t$'s unobserved part from the model's unconditional dynamics, which do not
    know $y$; the result is biased (see the C1 benchmark), which `ReconstructionGuidance` corrects for the most part.

    **Arguments:** `observation`, `y` (shape (m,)), `sde` (for $\alpha_t$, $\sigma_t$), `key`.
    """

    observation: AbstractObservation
    y: Float[Array, " m"]
    sde: AbstractSDE
    key: PRNGKeyArray

    def __init__(self, observation: AbstractObservation, y: ArrayLike, sde: AbstractSDE, key: PRNGKeyArray):
        if not isinstance(observation, AbstractObservation):
            raise TypeError(f"Replacement needs an AbstractObservation (Mask, Linear, ...); got {observation!r}")
        if not isinstance(sde, AbstractSDE):
            raise TypeError(f"Replacement needs `sde` to be an AbstractSDE; got {sde!r}")
        y = jnp.asarray(y, jnp.result_type(float))
        if y.shape != (observation.num_observed,):
            raise ValueError(f"Replacement needs `y` of shape ({observation.num_observed},); got {y.shape}")
        self.observation, self.y, self.sde, self.key = observation, y, sde, key

    def noised(self, t: Float[ArrayLike, ""], key: PRNGKeyArray) -> Float[Array, " m"]:
        r"""One draw of $z_t \sim q(z_t \mid y)$."""
        t = as_float(t)
        alpha, sigma = self.sde.alpha_sigma(t)
        # t = 0 is the samplers' clean end (EDM and DPM-Solver jump to sigma = 0 there): impose y exactly, not the
        # schedule's alpha(0) ~ 1, sigma(0) ~ 1e-9 of a VP process.
        alpha, sigma = jnp.where(t <= 0, 1.0, alpha), jnp.where(t <= 0, 0.0, sigma)
        eps = jax.random.normal(key, self.observation.shape, self.y.dtype)
        return alpha * self.y + sigma * self.observation(eps)

    def start(self, x_T: Float[Array, "*data"], key: PRNGKeyArray) -> Float[Array, "*data"]:
        r"""A starting state at $T$ whose observed part is drawn from $q(z_T \mid y)$ and whose unobserved part is
        that of `x_T` (a prior draw): `sf.sample(..., x_T=jax.vmap(hook.start)(x_T, keys), hook=hook)`. (The hook
        itself first acts after the first step; for a prior much wider than the data the difference is small.)"""
        return self.observation.replace(x_T, self.noised(self.sde.T, key).astype(x_T.dtype))

    def __call__(self, t: Float[ArrayLike, ""], x: Float[Array, "*data"]) -> Float[Array, "*data"]:
        t = as_float(t)
        z = self.noised(t, state_key(self.key, t, x)).astype(x.dtype)
        return self.observation.replace(x, z)
