"""Noise schedules: one primitive, gamma(t) = -log SNR(t); everything else is derived."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Scalar, ScalarLike
from .._misc import as_float, check_time


class AbstractSchedule(eqx.Module):
    r"""A variance-preserving noise schedule on $t \in [0, 1]$.

    Subclasses define only $\gamma(t) = -\log \mathrm{SNR}(t)$ (increasing in $t$). Derived:
    $\alpha^2 = \mathrm{sigmoid}(-\gamma)$, $\sigma^2 = \mathrm{sigmoid}(\gamma)$ and $\gamma'(t)$ (by `jax.jvp`),
    as in Variational Diffusion Models (Kingma et al., 2021).
    """

    @abc.abstractmethod
    def _gamma(self, t: Scalar) -> Scalar:
        """-log SNR at a time already checked to lie in [0, 1]."""

    def gamma(self, t: ScalarLike) -> Scalar:
        r"""$\gamma(t) = -\log \mathrm{SNR}(t)$. Raises (also under jit) if `t` is outside [0, 1]."""
        t = check_time(as_float(t), 1.0)
        return self._gamma(t)

    def dgamma(self, t: ScalarLike) -> Scalar:
        r"""$d\gamma/dt$, by forward-mode differentiation of `gamma`."""
        t = as_float(t)
        return jax.jvp(self.gamma, (t,), (jnp.ones_like(t),))[1]

    def gamma_and_dgamma(self, t: ScalarLike) -> tuple[Scalar, Scalar]:
        """Both at once (one forward-mode pass)."""
        t = as_float(t)
        return jax.jvp(self.gamma, (t,), (jnp.ones_like(t),))

    def alpha_sigma(self, t: ScalarLike) -> tuple[Scalar, Scalar]:
        r"""$(\alpha(t), \sigma(t))$ with $\alpha^2 = \mathrm{sigmoid}(-\gamma)$ and
        $\sigma^2 = \mathrm{sigmoid}(\gamma)$."""
        g = self.gamma(t)
        return jnp.sqrt(jax.nn.sigmoid(-g)), jnp.sqrt(jax.nn.sigmoid(g))

    def __call__(self, t: ScalarLike) -> Scalar:
        """Alias of `gamma`."""
        return self.gamma(t)
