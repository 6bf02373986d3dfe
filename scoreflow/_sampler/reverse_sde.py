import diffrax
import equinox as eqx
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._misc import check_instance, check_int
from .._sde import AbstractSDE
from ._diffrax_steps import count, scan_solver, solver_cost
from .base import AbstractSampler, Hook, ScoreFn
from .discretisation import GRID, AbstractTimeDiscretisation, VPTime


class ReverseSDE(AbstractSampler):
    r"""Solve the reverse-time SDE $dx = [f(t)x - g(t)^2\nabla\log p_t(x)]\,dt + g(t)\,d\bar W$ from $T$ to
    $t_0$ with a diffrax SDE solver (`Euler()` is Euler-Maruyama; `Heun()`, `ShARK()`, `SRA1()` are of higher
    order for this additive noise) on `steps` fixed steps of the `discretisation` grid (Song et al., 2021).

    Each example has its own `VirtualBrownianTree`. Time is run forwards in $s = T - t$
    ($dx = -[f x - g^2 s]\,ds + g\,dW_s$) so that the Brownian path is only queried on increasing intervals.
    """

    solver: diffrax.AbstractSolver = diffrax.Euler()
    steps: int = eqx.field(default=100, static=True)
    discretisation: AbstractTimeDiscretisation = VPTime()

    def __check_init__(self):
        solver_cost(self.solver, stochastic=True)
        check_int("ReverseSDE", "steps", self.steps, 1)
        check_instance("ReverseSDE", "discretisation", self.discretisation, AbstractTimeDiscretisation, GRID)

    def sample_one(
        self,
        score: ScoreFn,
        sde: AbstractSDE,
        x_T: Float[Array, "*data"],
        t0: float,
        key: PRNGKeyArray,
        hook: Hook | None,
    ) -> tuple[Float[Array, "*data"], Int[Array, ""], diffrax.RESULTS]:
        T = sde.T
        ss = T - self.discretisation.times(sde, self.steps, t0)
        ss = ss.at[0].set(0.0)
        levy = getattr(self.solver, "minimal_levy_area", diffrax.BrownianIncrement)
        if levy is diffrax.AbstractSpaceTimeLevyArea:
            levy = diffrax.SpaceTimeLevyArea
        elif levy is diffrax.AbstractBrownianIncrement:
            levy = diffrax.BrownianIncrement
        tol = 0.5 * jnp.min(jnp.diff(ss))  # finer than the smallest step, as diffrax requires
        brownian = diffrax.VirtualBrownianTree(0.0, ss[-1], tol, x_T.shape, key, levy_area=levy)

        def drift(s, x, args):
            t = T - s
            return -sde.reverse_drift(t, x, score(t, x))

        def diffusion(s, x, args):
            return lx.DiagonalLinearOperator(jnp.broadcast_to(sde.diffusion(T - s), x.shape))

        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
        x, result = scan_solver(self.solver, terms, ss, x_T, hook, hook_time=lambda s: T - s)
        init, per_step = solver_cost(self.solver, stochastic=True)
        return x, count(init, per_step, self.steps), result
