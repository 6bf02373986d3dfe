"""Fixed-step stepping of any explicit diffrax solver through `lax.scan`, with exact model-evaluation counts."""

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .base import Hook, apply_hook


_ONE_EVAL = (diffrax.Euler, diffrax.EulerHeun, diffrax.ItoMilstein, diffrax.StratonovichMilstein)


def solver_cost(
    solver: diffrax.AbstractSolver, *, stochastic: bool, made_jump: bool = False
) -> tuple[int, int]:
    """`(evaluations at init, evaluations per step)` of the drift (the model) for a diffrax solver.

    Explicit Runge-Kutta methods cost their stage count; first-same-as-last ones (Tsit5, Dopri5, Bosh3) one
    less per step after one at init, unless the state is changed between steps (`made_jump`, e.g. by a hook)
    or the problem is an SDE (diffrax then switches FSAL off). Raises `TypeError` for solvers whose cost is
    not fixed (implicit methods) or not known.
    """
    if isinstance(solver, _ONE_EVAL):
        return 0, 1
    if isinstance(solver, diffrax.AbstractSRK):
        return 0, len(solver.tableau.b_sol)
    if isinstance(solver, diffrax.AbstractERK):
        n = solver.tableau.num_stages
        if solver.tableau.fsal and not stochastic:
            return 1, n - 1 + int(made_jump)
        return 0, n
    raise TypeError(
        "`solver` must be an explicit diffrax solver with a known number of vector-field evaluations per step "
        "(Euler, EulerHeun, Heun, Midpoint, Ralston, Bosh3, Tsit5, Dopri5, Dopri8, the Milstein and SRK "
        f"solvers); got {type(solver).__name__}"
    )


def scan_solver(
    solver: diffrax.AbstractSolver,
    terms: diffrax.AbstractTerm,
    ts: Float[Array, " n"],
    y0: Array,
    hook: Hook | None,
    hook_time=lambda t: t,
) -> tuple[Array, diffrax.RESULTS]:
    """Step `solver` from `ts[0]` through every point of `ts` (increasing or decreasing) in a `lax.scan`,
    applying `hook(hook_time(t), y)` after each step. Returns the final state and the combined result."""
    made_jump = hook is not None
    state = solver.init(terms, ts[0], ts[1], y0, None)

    def body(carry, t_pair):
        y, state, result = carry
        ta, tb = t_pair
        y, _, _, state, step_result = solver.step(terms, ta, tb, y, None, state, made_jump)
        y = apply_hook(hook, hook_time(tb), y)
        result = diffrax.RESULTS.where(result == diffrax.RESULTS.successful, step_result, result)
        return (y, state, result), None

    (y, _, result), _ = jax.lax.scan(
        body, (y0, state, diffrax.RESULTS.successful), (ts[:-1], ts[1:])
    )
    return y, result


def count(init: int, per_step: int, steps: int | Int[Array, ""]) -> Int[Array, ""]:
    return jnp.asarray(init + per_step * steps, dtype=jnp.int32)
