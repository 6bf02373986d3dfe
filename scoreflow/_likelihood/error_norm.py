"""Error norms for the step-size control of the augmented (state, log-density) ODE."""

import abc
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import optimistix as optx  # diffrax's own dependency: its norms have safe derivatives at zero
from jaxtyping import Array, Float


class AbstractErrorNorm(eqx.Module):
    r"""Maps the scaled local error $(e_y, e_\delta)$ (already divided by atol + rtol |state|) of one step to
    a scalar; a step is accepted when it is <= 1.

    `density_scale` $K$: `log_likelihood` integrates $K\delta$ in place of the log-density $\delta$ (and divides
    by $K$ at the end), so the controller's tolerance on that component is $\text{atol} + \text{rtol}\,K|\delta|$.
    $K = 1$ is the usual mixed tolerance; a small power of two makes it absolute (exact in floating point).
    """

    density_scale: eqx.AbstractClassVar[float]

    @abc.abstractmethod
    def __call__(self, err: tuple[Float[Array, "*data"], Float[Array, " m"]]) -> Float[Array, ""]:
        """The norm of the scaled error."""


class StateDensityNorm(AbstractErrorNorm):
    r"""$\max(\mathrm{RMS}(e_y),\ w \max|e_\delta|)$: the RMS over the state and the log-density terms at
    weight `density_weight` $= w$ (max norm). In high dimension a plain RMS over the whole augmented state
    would drown the one term that is the answer; $w < 1$ loosens the log-density's tolerance by $1/w$
    (a tolerance split), $w = 0$ controls the state alone."""

    density_weight: float = 1.0
    density_scale: ClassVar[float] = 1.0

    def __check_init__(self):
        _check_weight(self.density_weight)

    def __call__(self, err: tuple[Float[Array, "*data"], Float[Array, " m"]]) -> Float[Array, ""]:
        y_err, delta_err = err
        return jnp.maximum(optx.rms_norm(y_err), self.density_weight * optx.max_norm(delta_err))


class NatsNorm(AbstractErrorNorm):
    r"""$\max(\|e_y\|_2,\ w\,|e_\delta| / \text{atol})$: both terms bound a local error **in nats**, the default
    error control of `log_likelihood` (chosen by measurement, benchmarks/results/likelihood.md).

    - The log-density $\delta$ under an absolute tolerance of atol / w nats per step, whatever its size. A relative
      tolerance on $\delta$ is loose exactly where the answer is large: $|\delta|$ is about 20 nats on the 64-d
      benchmark mixture against 1-3 in 2-d, so rtol $|\delta|$ loosened its tolerance twentyfold there. Integrating
      $K\delta$ with $K = 2^{-16}$ makes the relative part negligible (below 10% of atol for $|\delta| < 6500$ nats
      at rtol = atol); the weight $w/K$ undoes the scaling.
    - The state $y$ by the 2-norm of its scaled error (not the RMS): a state error $e$ moves the answer by about
      $\nabla\log p_t \cdot e$ nats (the flow carries $\log p_t(x_t) + \delta(t)$ unchanged), which grows with
      $\sqrt d$ for errors of a fixed RMS. The 2-norm tightens the state's tolerance by $\sqrt d$ over the RMS.

    On the benchmark mixtures (d = 2 and 64, VP and EDM, float32) this makes the achieved max error per unit of
    tolerance nearly independent of the problem (30-80 nats per unit rtol at rtol = 1e-5, against 10-1000 for the
    RMS with a relative log-density tolerance), which is what lets one default serve all of them.
    """

    density_weight: float = 0.3
    density_scale: ClassVar[float] = 2.0**-16

    def __check_init__(self):
        _check_weight(self.density_weight)

    def __call__(self, err: tuple[Float[Array, "*data"], Float[Array, " m"]]) -> Float[Array, ""]:
        y_err, delta_err = err
        weight = self.density_weight / self.density_scale
        return jnp.maximum(optx.two_norm(y_err), weight * optx.max_norm(delta_err))


class AugmentedRMSNorm(AbstractErrorNorm):
    r"""Plain RMS over the augmented state $(y, \delta)$, diffrax's default (as sbgm uses it)."""

    density_scale: ClassVar[float] = 1.0

    def __call__(self, err: tuple[Float[Array, "*data"], Float[Array, " m"]]) -> Float[Array, ""]:
        return optx.rms_norm(err)


def _check_weight(weight) -> None:
    if isinstance(weight, bool) or not (isinstance(weight, (int, float)) and weight >= 0):
        raise ValueError(f"`density_weight` must be a number >= 0; got density_weight={weight!r}")
