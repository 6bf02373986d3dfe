r"""DDIM on the grid a distilled model was trained for, and on no other; `DistillationGrid`, the record of that grid.

The grid record lives here, with the one sampler that consumes it, so that the sampler package never imports
`scoreflow._distill` (which imports the samplers' steps).

Convention: a student of $N$ steps runs DDIM from $t_0 = T$ down to $t_N = t_{\min}$ on the grid that
`discretisation.times(sde, N, t_min)` gives (for `UniformTime`, $t_i = T + (i/N)(t_{\min} - T)$, i.e. the
unit time $u = (t - t_{\min})/(T - t_{\min})$ of Salimans & Ho (2022) runs over $\{1, \dots, 1/N, 0\}$). Its
teacher runs the grid of $2N$ steps, whose even points are the student's grid (true for every discretisation in
scoreflow, all of which are affine in $i/N$ in some monotone variable), so a student step $t_i \to t_{i+1}$ is
the two teacher steps $u \to u - 1/(2N) \to u - 1/N$.
"""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._misc import check_instance, check_int
from .._sde import AbstractSDE
from ._steps import ddim_step
from .base import AbstractSampler, Hook, ScoreFn, apply_hook
from .discretisation import GRID, AbstractTimeDiscretisation, UniformTime


class DistillationGrid(eqx.Module):
    """A record of `steps + 1` decreasing times, from `T` (first) to the end time `t_min` (last), held as
    Python floats (static), so that it can be compared and checked without tracing.

    Build it with `DistillationGrid.of(sde, steps, t0, discretisation)`.
    """

    steps: int = eqx.field(static=True)
    times: tuple[float, ...] = eqx.field(static=True)

    def __check_init__(self):
        check_int("DistillationGrid", "steps", self.steps, 1)
        if len(self.times) != self.steps + 1:
            raise ValueError(f"DistillationGrid needs steps + 1 = {self.steps + 1} times; got {len(self.times)} times")
        if not all(a > b for a, b in zip(self.times[:-1], self.times[1:], strict=True)):
            raise ValueError(f"DistillationGrid needs strictly decreasing times; got {self.times}")

    @classmethod
    def of(
        cls,
        sde: AbstractSDE,
        steps: int,
        t0: float | None = None,
        discretisation: AbstractTimeDiscretisation = UniformTime(),
    ) -> "DistillationGrid":
        """The grid of `steps` steps of `discretisation` on `[t0, sde.T]` (`t0` defaults to `sde.t0`)."""
        check_int("DistillationGrid.of", "steps", steps, 1)
        check_instance("DistillationGrid.of", "discretisation", discretisation, AbstractTimeDiscretisation, GRID)
        t0 = float(sde.t0 if t0 is None else t0)
        times = np.asarray(discretisation.times(sde, steps, t0), dtype=np.float64)
        return cls(steps=int(steps), times=tuple(float(t) for t in times))

    def as_dict(self) -> dict:
        """The grid as JSON-ready data (checkpoint metadata): `{"steps": N, "times": [t_0, ..., t_N]}`."""
        return {"steps": self.steps, "times": list(self.times)}

    @classmethod
    def from_dict(cls, d: dict) -> "DistillationGrid":
        """The grid written by `as_dict` (the times round-trip exactly: JSON keeps every bit of a float)."""
        if not isinstance(d, dict) or "steps" not in d or "times" not in d:
            raise ValueError(f'a DistillationGrid record needs "steps" and "times"; got {d!r}')
        return cls(steps=int(d["steps"]), times=tuple(float(t) for t in d["times"]))

    @property
    def T(self) -> float:
        return self.times[0]

    @property
    def t_min(self) -> float:
        return self.times[-1]


class DistilledDDIM(AbstractSampler):
    r"""Deterministic DDIM (`eta = 0`) on exactly the `DistillationGrid` of a distilled model: a student of $N$
    steps is only trained to be right on its $N + 1$ grid times (Salimans & Ho, 2022).

    Build it from the model, `DistilledDDIM(distilled)`, or from its grid; `steps`, if given, must equal the grid's
    step count (a different count raises `ValueError` naming both). At sampling time the SDE's `T` and the end
    time `t0` of `sample` must be the grid's ends (default `t0` of `sample` is `sde.t0`, the default of
    `distill`). Use it with the distilled model: `sample(distilled, sde, key, shape, DistilledDDIM(distilled))`.
    """

    grid: DistillationGrid
    steps: int = eqx.field(static=True)

    def __init__(self, grid: DistillationGrid | eqx.Module, steps: int | None = None):
        # a `Distilled` model carries its grid (duck-typed: this package does not import `scoreflow._distill`)
        grid = getattr(grid, "grid", grid)
        if not isinstance(grid, DistillationGrid):
            raise TypeError(
                f"DistilledDDIM needs `grid` to be a Distilled model or its DistillationGrid; got grid={grid!r}"
            )
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps != grid.steps):
            raise ValueError(
                f"DistilledDDIM: the model was distilled for {grid.steps} steps, so it samples with exactly "
                f"{grid.steps}; got steps={steps!r} (distil further, or use the model it was distilled from, for "
                "another count)"
            )
        self.grid = grid
        self.steps = grid.steps

    def sample_one(
        self,
        score: ScoreFn,
        sde: AbstractSDE,
        x_T: Float[Array, "*data"],
        t0: float,
        key: PRNGKeyArray,
        hook: Hook | None,
    ) -> tuple[Float[Array, "*data"], Int[Array, ""], diffrax.RESULTS]:
        for name, want, got in (("sde.T", self.grid.T, float(sde.T)), ("t0", self.grid.t_min, float(t0))):
            if not math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-12):
                raise ValueError(
                    f"DistilledDDIM: the model was distilled on a grid from T = {self.grid.T} to t0 = "
                    f"{self.grid.t_min}; got {name} = {got} (pass t0={self.grid.t_min} to sample, and the SDE it was "
                    "distilled under)"
                )
        ts = jnp.asarray(self.grid.times, x_T.dtype)

        def body(x, inputs):
            t, s = inputs
            x = ddim_step(score, sde, t, s, x, 0.0, None)
            return apply_hook(hook, s, x), None

        x, _ = jax.lax.scan(body, x_T, (ts[:-1], ts[1:]))
        return x, jnp.asarray(self.steps, jnp.int32), diffrax.RESULTS.successful


def check_sampler_for(model, sampler: AbstractSampler) -> None:
    """Refuse, before any work, to sample a model that carries a `DistillationGrid` (a `Distilled` model, found
    by its `grid` field) with anything but `DistilledDDIM` on that same grid: a distilled student is trained to be
    right on its grid only, and any other sampler or step count silently gives a different, worse distribution."""
    grid = getattr(model, "grid", None)
    if not isinstance(grid, DistillationGrid):
        return
    if isinstance(sampler, DistilledDDIM) and sampler.grid == grid:
        return
    if isinstance(sampler, DistilledDDIM):
        got = f"DistilledDDIM on another grid ({sampler.grid.steps} steps, times {sampler.grid.times})"
    else:
        steps = getattr(sampler, "steps", None)
        got = f"{type(sampler).__name__}" + ("" if steps is None else f" with steps={steps}")
    raise ValueError(
        f"sample: the model is distilled for DDIM on its grid of {grid.steps} steps (times {grid.times}) and "
        f"samples only with DistilledDDIM(model); got sampler={got}. Use sampler=DistilledDDIM(model), or sample "
        "`model.model` (the network alone) if you really mean another sampler or step count"
    )
