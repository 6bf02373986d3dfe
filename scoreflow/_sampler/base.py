"""The sampler contract and the `sample` entry point."""

import abc
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._custom_types import Scalar
from .._sde import AbstractSDE


ScoreFn = Callable[[Scalar, Array], Array]  # score(t, x) of one example, conditioning already bound
Hook = Callable[[Scalar, Array], Array]  # hook(t, x) -> x for one example


class SampleResult(eqx.Module):
    r"""What `sample` returns.

    - `samples`: `(batch, *data)` samples at the sampler's end time.
    - `nfe`: `(batch,)` number of model evaluations spent on each example (a Heun step costs 2, an EDM run
      with N steps 2N - 1; adaptive solvers count rejected steps too).
    - `result`: per-example `diffrax.RESULTS`: `successful`; `nonfinite_input` (the start $x_T$ had NaN or inf
      values; the sample is then that $x_T$); `nonfinite` (the sample has NaN or inf values: the model's score or
      the SDE's coefficients were not finite somewhere on the path); `max_steps_reached` (an adaptive
      `ProbabilityFlow` used all its `max_steps`; the sample is unfinished); or another reason a diffrax solve
      stopped. `successful` is a boolean array, False for every failed example. With `sample(..., throw=True)`
      (the default) a failure raises instead, so the result is only inspected with `throw=False`.
    - `t0`: the time the samples are at: the end time used, or 0 for samplers whose last step jumps to
      $\sigma = 0$ (`EDMHeun`, `DPMSolverPP` with `final_step_to_zero`), where `t0` only bounds the grid.
    """

    samples: Float[Array, " batch *data"]
    nfe: Int[Array, " batch"]
    result: diffrax.RESULTS
    t0: float = eqx.field(static=True)

    @property
    def successful(self) -> Array:
        return self.result == diffrax.RESULTS.successful


class AbstractSampler(eqx.Module):
    """A strategy that turns a prior draw $x_T$ into a sample at `t0`, for **one** example.

    `sample` vmaps it over the batch with per-example keys, so one example never depends on its batch-mates;
    the time grid is the same for every example, so `t` stays unbatched inside fixed-step samplers.
    """

    @abc.abstractmethod
    def sample_one(
        self,
        score: ScoreFn,
        sde: AbstractSDE,
        x_T: Float[Array, "*data"],
        t0: float,
        key: PRNGKeyArray,
        hook: Hook | None,
    ) -> tuple[Float[Array, "*data"], Int[Array, ""], diffrax.RESULTS]:
        """Return `(x, nfe, result)` for one example started at `x_T` (a draw from `sde.prior`)."""

    def end_time(self, t0: float) -> float:
        """The time the samples are at when the grid ends at `t0` (0 for samplers that jump to sigma = 0)."""
        return t0


def apply_hook(hook: Hook | None, t: Array, x: Array) -> Array:
    """`hook(t, x)` with its output checked to keep the shape and dtype of `x`."""
    if hook is None:
        return x
    out = hook(t, x)
    if not (isinstance(out, jax.Array) and out.shape == x.shape and out.dtype == x.dtype):
        got = (getattr(out, "shape", None), getattr(out, "dtype", None))
        raise ValueError(
            f"`hook(t, x)` must return an array of x's shape and dtype {x.shape, x.dtype}; got {got}"
        )
    return out
