"""Error norms for the step-size control of the augmented (state, log-density) ODE."""

import abc

import equinox as eqx
import jax.numpy as jnp
import optimistix as optx  # diffrax's own dependency: its norms have safe derivatives at zero
from jaxtyping import Array, Float


class AbstractErrorNorm(eqx.Module):
    r"""Maps the scaled local error $(e_y, e_\delta)$ (already divided by atol + rtol |state|) of one step to
    a scalar; a step is accepted when it is <= 1."""

    @abc.abstractmethod
    def __call__(self, err: tuple[Float[Array, "*data"], Float[Array, " m"]]) -> Float[Array, ""]:
        """The norm of the scaled error."""


class StateDensityNorm(AbstractErrorNorm):
    r"""$\max(\mathrm{RMS}(e_y),\ w \max|e_\delta|)$: the RMS over the state and the log-density terms at
    weight `density_weight` $= w$ (max norm). In high dimension a plain RMS over the whole augmented state
    would drown the one term that is the answer; $w < 1$ loosens the log-density's tolerance by $1/w$
    (a tolerance split), $w = 0$ controls the state alone."""

    density_weight: float = 1.0

    def __check_init__(self):
        if not (isinstance(self.density_weight, (int, float)) and self.density_weight >= 0):
            raise ValueError(f"`density_weight` must be a number >= 0; got density_weight={self.density_weight!r}")

    def __call__(self, err: tuple[Float[Array, "*data"], Float[Array, " m"]]) -> Float[Array, ""]:
        y_err, delta_err = err
        return jnp.maximum(optx.rms_norm(y_err), self.density_weight * optx.max_norm(delta_err))


class AugmentedRMSNorm(AbstractErrorNorm):
    r"""Plain RMS over the augmented state $(y, \delta)$, diffrax's default (as sbgm uses it)."""

    def __call__(self, err: tuple[Float[Array, "*data"], Float[Array, " m"]]) -> Float[Array, ""]:
        return optx.rms_norm(err)
