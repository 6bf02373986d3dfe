import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._misc import check_instance, check_int, check_real
from .._sde import AbstractSDE
from ._steps import ddim_step
from .base import AbstractSampler, Hook, ScoreFn, apply_hook
from .discretisation import GRID, AbstractTimeDiscretisation, VPTime


class DDIM(AbstractSampler):
    r"""DDIM (Song, Meng & Ermon, 2021) for any linear SDE, `steps` model evaluations:
    $x_s = \alpha_s\hat x_0 + \sqrt{\sigma_s^2 - \sigma_\eta^2}\,\hat\epsilon + \sigma_\eta z$ with
    $\sigma_\eta^2 = \eta^2\sigma_s^2(1 - e^{\lambda_t - \lambda_s})$. `eta=0` is deterministic (first-order
    exponential integrator of the probability-flow ODE, i.e. DPM-Solver-1); `eta=1` is ancestral sampling."""

    steps: int = eqx.field(default=50, static=True)
    eta: float = 0.0
    discretisation: AbstractTimeDiscretisation = VPTime()

    def __check_init__(self):
        check_int("DDIM", "steps", self.steps, 1)
        check_real("DDIM", "eta", self.eta, 0.0, 1.0)
        check_instance("DDIM", "discretisation", self.discretisation, AbstractTimeDiscretisation, GRID)

    def sample_one(
        self,
        score: ScoreFn,
        sde: AbstractSDE,
        x_T: Float[Array, "*data"],
        t0: float,
        key: PRNGKeyArray,
        hook: Hook | None,
    ) -> tuple[Float[Array, "*data"], Int[Array, ""], diffrax.RESULTS]:
        ts = self.discretisation.times(sde, self.steps, t0)
        stochastic = self.eta != 0

        def body(x, inputs):
            t, s, k = inputs
            x = ddim_step(score, sde, t, s, x, self.eta, k if stochastic else None)
            return apply_hook(hook, s, x), None

        x, _ = jax.lax.scan(body, x_T, (ts[:-1], ts[1:], jax.random.split(key, self.steps)))
        return x, jnp.asarray(self.steps, jnp.int32), diffrax.RESULTS.successful
