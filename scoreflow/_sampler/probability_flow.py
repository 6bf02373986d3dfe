import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._misc import check_instance, check_int, check_real
from .._sde import AbstractSDE
from ._diffrax_steps import count, scan_solver, solver_cost
from .base import AbstractSampler, Hook, ScoreFn
from .discretisation import GRID, AbstractTimeDiscretisation, VPTime


class ProbabilityFlow(AbstractSampler):
    r"""Solve the probability-flow ODE $dx/dt = f(t)x - \tfrac12 g(t)^2 \nabla\log p_t(x)$ from $T$ down to
    $t_0$ with any explicit diffrax solver (Song et al., 2021), per example.

    Adaptive (`PIDController(rtol, atol)`, at most `max_steps` steps; running out is reported as
    `RESULTS.max_steps_reached`, which `sample` raises unless `throw=False`) when `steps` is None; else `steps`
    fixed steps on the `discretisation` grid, stepped in a `lax.scan`. A hook needs fixed steps.
    """

    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    rtol: float = 1e-5
    atol: float = 1e-5
    steps: int | None = eqx.field(default=None, static=True)
    max_steps: int = eqx.field(default=4096, static=True)
    discretisation: AbstractTimeDiscretisation = VPTime()

    def __check_init__(self):
        solver_cost(self.solver, stochastic=False)  # raises TypeError for unsupported solvers
        if self.steps is not None:
            check_int("ProbabilityFlow", "steps", self.steps, 1, hint=" (or None for adaptive)")
        check_real("ProbabilityFlow", "rtol", self.rtol, 0.0, low_open=True)
        check_real("ProbabilityFlow", "atol", self.atol, 0.0, low_open=True)
        check_int("ProbabilityFlow", "max_steps", self.max_steps, 1)
        check_instance("ProbabilityFlow", "discretisation", self.discretisation, AbstractTimeDiscretisation, GRID)

    def sample_one(
        self,
        score: ScoreFn,
        sde: AbstractSDE,
        x_T: Float[Array, "*data"],
        t0: float,
        key: PRNGKeyArray,
        hook: Hook | None,
    ) -> tuple[Float[Array, "*data"], Int[Array, ""], diffrax.RESULTS]:
        del key  # deterministic
        term = sde.probability_flow_term(lambda t, x, cond: score(t, x))
        if self.steps is not None:
            ts = self.discretisation.times(sde, self.steps, t0)
            x, result = scan_solver(self.solver, term, ts, x_T, hook)
            init, per_step = solver_cost(self.solver, stochastic=False, made_jump=hook is not None)
            return x, count(init, per_step, self.steps), result
        if hook is not None:
            raise ValueError("a `hook` needs a fixed-step sampler; pass ProbabilityFlow(steps=...)")
        init, per_step = solver_cost(self.solver, stochastic=False)
        sol = diffrax.diffeqsolve(
            term,
            self.solver,
            sde.T,
            t0,
            (t0 - sde.T) / 32,
            x_T,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            max_steps=self.max_steps,
            throw=False,
        )
        assert sol.ys is not None and sol.stats is not None
        nfe = count(init, per_step, jnp.asarray(sol.stats["num_steps"], jnp.int32))
        return sol.ys[0], nfe, sol.result
