import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Scalar
from .base import AbstractSchedule


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class LearnedSchedule(AbstractSchedule):
    r"""VDM's learnable schedule: a monotone network with positive weights, rescaled to fixed endpoints.

    $\tilde\gamma(t) = l_1(t) + l_3(\phi(l_2(l_1(t))))$ with positive weights (softplus of free parameters)
    and $\phi(u) = 2\,\mathrm{sigmoid}(u) - 1$, then
    $\gamma(t) = \gamma_{min} + (\gamma_{max} - \gamma_{min}) (\tilde\gamma(t) - \tilde\gamma(0)) /
    (\tilde\gamma(1) - \tilde\gamma(0))$. Strictly increasing for any parameter values, with
    $\gamma(0) = \gamma_{min}$ and $\gamma(1) = \gamma_{max}$ exactly (Kingma et al., 2021, appendix H).

    The endpoints are learnable when `learn_endpoints=True` (then $\gamma_{max} = \gamma_{min} +
    \mathrm{softplus}(\cdot)$ keeps them ordered), else held fixed by `stop_gradient`.
    """

    w1: Float[Array, ""]
    b1: Float[Array, ""]
    w2: Float[Array, " hidden"]
    b2: Float[Array, " hidden"]
    w3: Float[Array, " hidden"]
    gamma_min_param: Float[Array, ""]
    gamma_range_param: Float[Array, ""]
    learn_endpoints: bool = eqx.field(static=True)

    def __init__(
        self,
        gamma_min: float = -13.3,
        gamma_max: float = 5.0,
        hidden: int = 1024,
        learn_endpoints: bool = True,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `gamma_min`, `gamma_max` (initial / fixed endpoints, gamma_min < gamma_max),
        `hidden` (width of the monotone layer), `learn_endpoints`, `key` (initialisation)."""
        if not gamma_min < gamma_max:
            raise ValueError(
                f"LearnedSchedule needs gamma_min < gamma_max; got gamma_min={gamma_min}, gamma_max={gamma_max}"
            )
        if hidden < 1:
            raise ValueError(f"LearnedSchedule needs hidden >= 1; got hidden={hidden}")
        k2, k3 = jax.random.split(key)
        # Strongly typed leaves: weak-typed scalars would turn strong after one optimiser step and force a retrace.
        dtype = jnp.result_type(float)
        self.w1 = jnp.array(_inv_softplus(1.0), dtype=dtype)
        self.b1 = jnp.array(0.0, dtype=dtype)
        self.w2 = jax.random.normal(k2, (hidden,)) - 2.0
        self.b2 = jnp.zeros((hidden,))
        self.w3 = jax.random.normal(k3, (hidden,)) - 6.0
        self.gamma_min_param = jnp.array(float(gamma_min), dtype=dtype)
        self.gamma_range_param = jnp.array(_inv_softplus(float(gamma_max - gamma_min)), dtype=dtype)
        self.learn_endpoints = learn_endpoints

    @property
    def gamma_min(self) -> Scalar:
        p = self.gamma_min_param
        return p if self.learn_endpoints else jax.lax.stop_gradient(p)

    @property
    def gamma_max(self) -> Scalar:
        r = self.gamma_range_param
        r = r if self.learn_endpoints else jax.lax.stop_gradient(r)
        return self.gamma_min + jax.nn.softplus(r)

    def _unnormalised(self, t: Scalar) -> Scalar:
        h = jax.nn.softplus(self.w1) * t + self.b1
        u = 2.0 * jax.nn.sigmoid(jax.nn.softplus(self.w2) * h + self.b2) - 1.0
        return h + jnp.dot(jax.nn.softplus(self.w3), u)

    def _gamma(self, t: Scalar) -> Scalar:
        t = t.astype(jnp.result_type(t, self.w1))
        g0 = self._unnormalised(jnp.zeros_like(t))
        g1 = self._unnormalised(jnp.ones_like(t))
        frac = (self._unnormalised(t) - g0) / (g1 - g0)
        return self.gamma_min * (1.0 - frac) + self.gamma_max * frac  # exact at both ends
