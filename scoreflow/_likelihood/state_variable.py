"""State variables of the probability-flow ODE: the data x itself, or x rescaled by the mean scale alpha(t)."""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Scalar
from .._sde import AbstractSDE


class AbstractStateVariable(eqx.Module):
    r"""The state $y = x / c(t)$ integrated by `log_likelihood`, for a positive scalar $c(t)$.

    With $x = c\,y$ the probability-flow ODE $dx/dt = f x - \tfrac12 g^2 s(t, x)$ becomes
    $dy/dt = (f - c'/c)\,y - \tfrac12 g^2 s(t, c y)/c$, whose divergence in $y$ is
    $d\,(f - c'/c) - \tfrac12 g^2\,\nabla_x\!\cdot s$. The change of variables adds the closed-form term
    $d\,(\log c(T) - \log c(t_0))$ to the log-density, so every choice gives the same answer; only the
    smoothness of the path the solver follows changes.
    """

    @abc.abstractmethod
    def log_scale(self, sde: AbstractSDE, t: Scalar) -> Scalar:
        r"""$\log c(t)$."""

    @abc.abstractmethod
    def drift_coeff(self, sde: AbstractSDE, t: Scalar) -> Scalar:
        r"""The linear drift coefficient left in the $y$ ODE, $f(t) - c'(t)/c(t)$."""

    def to_state(self, sde: AbstractSDE, t: Scalar, x: Float[Array, "*data"]) -> Float[Array, "*data"]:
        return x * jnp.exp(-self.log_scale(sde, t)).astype(x.dtype)

    def to_data(self, sde: AbstractSDE, t: Scalar, y: Float[Array, "*data"]) -> Float[Array, "*data"]:
        return y * jnp.exp(self.log_scale(sde, t)).astype(y.dtype)


class DataState(AbstractStateVariable):
    """Integrate the data $x$ itself, $c = 1$ (score-SDE, sbgm)."""

    def log_scale(self, sde: AbstractSDE, t: Scalar) -> Scalar:
        return jnp.zeros_like(t)

    def drift_coeff(self, sde: AbstractSDE, t: Scalar) -> Scalar:
        return sde.drift_coeff(t)


class ScaledState(AbstractStateVariable):
    r"""Integrate $y = x/\alpha(t)$, the state of the equivalent variance-exploding process (Karras et al.,
    2022, eq. 4 and sec. 4): since $f = d\log\alpha/dt$ the linear drift cancels and
    $dy/dt = -\tfrac12 g^2 s(t, \alpha y)/\alpha$; in $\tilde\sigma = \sigma/\alpha$ (`SigmaVariable`) this is
    $dy/d\tilde\sigma = (y - D(y))/\tilde\sigma$ with $D$ the denoiser. The log-density gains
    $d\,(\log\alpha(T) - \log\alpha(t_0))$. For variance-exploding SDEs ($\alpha = 1$) it equals `DataState`.
    """

    def log_scale(self, sde: AbstractSDE, t: Scalar) -> Scalar:
        alpha, _ = sde.alpha_sigma(t)
        return jnp.log(alpha)

    def drift_coeff(self, sde: AbstractSDE, t: Scalar) -> Scalar:
        return jnp.zeros_like(t)
