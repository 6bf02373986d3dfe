"""Exact log-likelihoods of score models through the probability-flow ODE."""

import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._custom_types import Conditioning, ScalarLike
from .._misc import as_float, as_key, is_traced, name_examples, per_example_error_if
from .._model import AbstractScoreModel
from .._sde import AbstractSDE
from .divergence import AbstractDivergence, ExactTrace
from .error_norm import AbstractErrorNorm, NatsNorm
from .state_variable import AbstractStateVariable, DataState
from .time_variable import AbstractTimeVariable, TimeVariable


class LikelihoodResult(eqx.Module):
    """What `log_likelihood` returns, one entry per example.

    - `log_prob`: $\\log p_{t_0}(x)$ in nats (for `Hutchinson`, the mean over probes).
    - `prior_log_prob`, `delta_log_prob`: the two terms, $\\log p_T(x_T)$ and $\\int_{t_0}^T \\nabla\\cdot v\\,dt$
      (for `ScaledState`, the integral in y plus the closed-form term $d\\,(\\log\\alpha(T) - \\log\\alpha(t_0))$).
    - `stderr`: Monte Carlo standard error of `log_prob` (0 for `ExactTrace`; NaN for one Hutchinson probe).
    - `t0`: the start time used (scalar). `nfe`: vector-field (score-model) evaluations of the solve.
    - `num_steps`: solver steps (accepted and rejected). `result`: the diffrax status (always successful:
      a failed solve or a non-finite log-density raises instead).
    """

    log_prob: Float[Array, " batch"]
    prior_log_prob: Float[Array, " batch"]
    delta_log_prob: Float[Array, " batch"]
    stderr: Float[Array, " batch"]
    t0: Float[Array, ""]
    nfe: Int[Array, " batch"]
    num_steps: Int[Array, " batch"]
    result: Any


def _evaluations_per_step(solver: diffrax.AbstractSolver) -> tuple[int, int]:
    """(vector-field evaluations per step, extra evaluations at the start) of an explicit Runge-Kutta solver:
    a first-same-as-last tableau reuses its last stage and pays one evaluation at the start. (diffrax's
    controller picks its first step without evaluating the vector field.) Checked by counting in the tests."""
    if not isinstance(solver, diffrax.AbstractERK):
        raise TypeError(
            "`solver` must be an explicit Runge-Kutta diffrax solver (Tsit5, Dopri5, Dopri8, Bosh3, Heun, ...); "
            f"got {type(solver).__name__}"
        )
    tableau = solver.tableau
    stages = tableau.num_stages
    if tableau.fsal:
        return stages - 1, 1
    return stages, 0


def _check_positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError) as e:
        raise TypeError(f"`{name}` must be a positive Python number; got {value!r}") from e
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"`{name}` must be a finite number > 0; got {name}={value!r}")
    return v


# The default error control, chosen by measurement (benchmarks/results/likelihood.md, docs/likelihood.md): Dopri5,
# integration in t on the data x, local errors bounded in nats (NatsNorm(0.3)), rtol = atol = 1e-5.
DEFAULT_TOL = 1e-5
_DOPRI5 = diffrax.Dopri5()
_EXACT = ExactTrace()
_TIME = TimeVariable()
_DATA = DataState()
_NORM = NatsNorm()
_CHECKPOINT = diffrax.RecursiveCheckpointAdjoint()


def log_likelihood(
    model: AbstractScoreModel,
    sde: AbstractSDE,
    x: Float[Array, " batch *data"],
    solver: diffrax.AbstractSolver = _DOPRI5,
    rtol: float = DEFAULT_TOL,
    atol: float = DEFAULT_TOL,
    divergence: AbstractDivergence = _EXACT,
    *,
    key: PRNGKeyArray | None = None,
    prior: Any = None,
    t0: ScalarLike | None = None,
    cond: Conditioning = None,
    max_steps: int = 4096,
    time_variable: AbstractTimeVariable = _TIME,
    state_variable: AbstractStateVariable = _DATA,
    error_norm: AbstractErrorNorm = _NORM,
    adjoint: diffrax.AbstractAdjoint = _CHECKPOINT,
    dt0: float | None = None,
    batch_size: int | None = None,
) -> LikelihoodResult:
    r"""Per-example log-density $\log p_{t_0}(x)$ of a score model by the instantaneous change of variables.

    Integrates the augmented probability-flow ODE (Chen et al., 2018; Song et al., 2021)
    $$\frac{d}{dt}\begin{pmatrix}x\\ \delta\end{pmatrix} = \begin{pmatrix}v(t,x)\\ \nabla\cdot v(t,x)\end{pmatrix},
    \qquad v = f(t)x - \tfrac12 g(t)^2 s_\theta(t, x),$$
    from $t_0$ to $T$ and returns $\log p_T(x_T) + \delta(T)$. The divergence of the linear drift, $f(t)\,d$,
    is added exactly; only the score's divergence is computed by `divergence`.

    One ODE per example (`vmap` over `diffeqsolve`), so no example's steps or result depend on its batch-mates;
    `Hutchinson` probes of example i are drawn from `jax.random.fold_in(key, i)`. Under `vmap` the batch pays the
    NFE of its slowest example (`nfe.max()`), not the mean.

    **Default error control and its accuracy** (chosen by measurement, docs/likelihood.md): Dopri5 in t on x,
    `NatsNorm(0.3)` (the 2-norm of the state's scaled error, and the log-density under an absolute tolerance of
    atol / 0.3 nats per step, whatever its size) and rtol = atol = 1e-5. Measured on the benchmark mixtures
    (2-d and 64-d, VP and EDM, float32, 1000 examples, exact trace): max |error| 2.8e-4 to 7.9e-4 nats at the
    default, i.e. 30-80 rtol; tests/test_likelihood_accuracy.py checks max |error| <= 100 tol + 2e-5 nats at
    tol = 1e-4, 1e-5, 1e-6 on closed-form mixtures.

    **Arguments:**
    - `model`: score model on one example; `sde`: its forward SDE. `x`: data, shape `(batch, *data)`, finite
      and floating-point (float16/bfloat16 are computed in float32). Integer data (e.g. uint8 pixels) is refused:
      a density at integer points is not a probability of discrete data; use `bits_per_dim`, which dequantises.
    - `solver`: explicit Runge-Kutta diffrax solver (default `Dopri5()`); `rtol`, `atol` (> 0, default 1e-5) for a
      `PIDController`.
    - `divergence`: `ExactTrace()` or `Hutchinson(num_probes, distribution)` (needs `key`).
    - `prior`: anything with `log_prob(x_T)` for one example (default: the SDE's Gaussian prior), e.g.
      `marginal(gmm, sde, sde.T)` to measure the prior mismatch apart.
    - `t0`: start time (default `sde.t0`); `cond`: conditioning with a leading batch axis, or None.
    - `max_steps`: step budget per example; running out raises (never a half-finished number).
    - `time_variable`: `TimeVariable()`, `LogSNRVariable()` or `SigmaVariable()`: the variable integrated in.
    - `state_variable`: `DataState()` (x) or `ScaledState()` (x / alpha(t), no linear drift; with
      `SigmaVariable()` this is the EDM form $dy/d\tilde\sigma = (y - D(y))/\tilde\sigma$).
    - `error_norm`: `NatsNorm(density_weight)` (default), `StateDensityNorm(density_weight)` (mixed
      tolerance on the log-density too) or `AugmentedRMSNorm()` (diffrax's RMS over everything), for the step-size
      control.
    - `dt0`: first step (in the integration variable); None lets the controller choose it.
    - `adjoint`: diffrax adjoint for gradients (`RecursiveCheckpointAdjoint()` or `BacksolveAdjoint()`).
    - `batch_size`: solve at most this many examples at a time (None: all at once), so any number of examples
      runs in bounded memory. Every chunk has the same size (the last is padded with copies of its last example,
      whose results are dropped), so one compiled program serves all chunks; each example's result, Hutchinson
      probes included, is the same as without chunking.

    **Returns:** a `LikelihoodResult`.

    **Raises** `ValueError` for non-finite `x` and `RuntimeError` when an example's solve fails (e.g. runs out
    of `max_steps`) or its log-density is not finite, naming the examples; under `jit`, where messages are
    static, an `equinox.EquinoxRuntimeError` naming the reason only.
    """
    rtol = _check_positive("rtol", rtol)
    atol = _check_positive("atol", atol)
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"`max_steps` must be an integer >= 1; got max_steps={max_steps!r}")
    if not isinstance(divergence, AbstractDivergence):
        raise TypeError(f"`divergence` must be ExactTrace() or Hutchinson(...); got {divergence!r}")
    if not isinstance(time_variable, AbstractTimeVariable):
        raise TypeError(
            f"`time_variable` must be TimeVariable(), LogSNRVariable() or SigmaVariable(); got {time_variable!r}"
        )
    if not isinstance(state_variable, AbstractStateVariable):
        raise TypeError(f"`state_variable` must be DataState() or ScaledState(); got {state_variable!r}")
    if not isinstance(error_norm, AbstractErrorNorm):
        raise TypeError(
            "`error_norm` must be NatsNorm(...), StateDensityNorm(...) or AugmentedRMSNorm(); "
            f"got {error_norm!r}"
        )
    if not isinstance(adjoint, diffrax.AbstractAdjoint):
        raise TypeError(f"`adjoint` must be a diffrax adjoint; got {adjoint!r}")
    _evaluations_per_step(solver)
    if dt0 is not None:
        dt0 = _check_positive("dt0", dt0)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        hint = (
            "; for discrete data such as uint8 pixels use bits_per_dim(lambda x, key: log_likelihood(...), data, "
            "num_levels=256, key=key), which dequantises it (a density at integer points is no probability)"
            if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_
            else ""
        )
        raise TypeError(f"`x` must be a floating-point array of continuous data; got dtype {x.dtype}{hint}")
    x = as_float(x)
    if x.ndim < 2:
        raise ValueError(f"`x` must be a batch of examples of shape (batch, *data); got shape {x.shape}")
    batch = x.shape[0]
    x = per_example_error_if(
        x,
        ~jnp.all(jnp.isfinite(x.reshape(batch, math.prod(x.shape[1:]))), axis=1),
        "`x` has non-finite values (NaN or inf) in {examples}; expected finite data",
    )
    data_shape = x.shape[1:]
    if divergence.needs_key and key is None:
        raise ValueError(f"`key` is required by divergence={divergence!r} to draw its probes; got key=None")
    if key is not None:
        key = as_key("key", key)
        if key.shape != ():
            raise ValueError(f"`key` must be a single PRNG key; got a key array of shape {key.shape}")
    t_start = as_float(sde.t0 if t0 is None else t0).astype(x.dtype)
    if t_start.ndim != 0:
        raise ValueError(f"`t0` must be a scalar; got shape {t_start.shape}")
    if not isinstance(t_start, jax.core.Tracer) and not (0.0 <= float(t_start) < sde.T):
        raise ValueError(f"`t0` must lie in [0, T) = [0, {sde.T}); got t0={float(t_start)}")
    if prior is not None:
        if not callable(getattr(prior, "log_prob", None)):
            raise TypeError(f"`prior` must have a `log_prob` method; got {type(prior).__name__}")
        event_shape = getattr(prior, "event_shape", None)
        if event_shape is not None and tuple(event_shape) != tuple(data_shape):
            raise ValueError(
                f"`prior` has event_shape {tuple(event_shape)} but the examples in `x` have shape {data_shape}"
            )
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"`batch_size` must be an integer >= 1 or None; got batch_size={batch_size!r}")
    # Tolerances, t0 and dt0 travel as arrays, so changing them reuses the compiled solve.
    tols = jnp.asarray([rtol, atol, 0.0 if dt0 is None else dt0], x.dtype)
    static = (solver, dt0 is None, divergence, key, prior, t_start)
    rest = (max_steps, time_variable, state_variable, error_norm, adjoint)
    if batch_size is None or batch_size >= batch:
        out = _solve(model, sde, x, tols, *static, cond, jnp.arange(batch), *rest)
        return _raise_failures(out, max_steps)
    chunks = []
    for start in range(0, batch, batch_size):
        index = np.minimum(np.arange(start, start + batch_size), batch - 1)  # pad with the last example
        cond_c = None if cond is None else jax.tree.map(lambda c, index=index: c[index], cond)
        ids = jnp.minimum(jnp.arange(start, start + batch_size), batch - 1)
        chunks.append((_solve(model, sde, x[index], tols, *static, cond_c, ids, *rest), index))
    keep = [np.flatnonzero(np.r_[True, np.diff(index) > 0]) for _, index in chunks]
    out = jax.tree.map(
        lambda *leaves: (
            jnp.concatenate([leaf[k] for leaf, k in zip(leaves, keep, strict=True)])
            if jnp.ndim(leaves[0]) >= 1
            else leaves[0]
        ),
        *[c for c, _ in chunks],
    )
    return _raise_failures(out, max_steps)


def _reasons(max_steps: int) -> tuple[str, str, str]:
    return (
        f"the ODE solve used its whole step budget, max_steps={max_steps} steps, before reaching T; raise "
        "`max_steps` or loosen `rtol`/`atol` (a model that returns NaN or inf also ends here, as every step is "
        "rejected)",
        "the ODE solve failed (step size underflow or a non-finite vector field); check the model's output",
        "the log-density is not finite (check the model's output and the prior's log_prob at x_T)",
    )


def _raise_failures(out: LikelihoodResult, max_steps: int) -> LikelihoodResult:
    """Raise if any example's solve failed or gave a non-finite log-density. Eagerly (one host sync on the
    statuses) the message names the examples; under `jit` it is `eqx.branched_error_if`, with static messages."""
    out_of_steps = out.result == diffrax.RESULTS.max_steps_reached
    failed = (out.result != diffrax.RESULTS.successful) & ~out_of_steps
    nonfinite = ~jnp.isfinite(out.log_prob) & ~out_of_steps & ~failed
    reasons = _reasons(max_steps)
    if is_traced(out_of_steps, failed, nonfinite):
        code = jnp.where(out_of_steps, 1, jnp.where(failed, 2, jnp.where(nonfinite, 3, 0)))
        msgs = ["", *(f"log_likelihood: at least one example failed: {r}" for r in reasons)]
        log_prob = eqx.branched_error_if(out.log_prob, jnp.any(code > 0), jnp.max(code), msgs)
        return eqx.tree_at(lambda r: r.log_prob, out, log_prob)
    batch = out.log_prob.shape[0]
    lines = [
        f"{name_examples(index, batch)}: {reason}"
        for mask, reason in zip((out_of_steps, failed, nonfinite), reasons, strict=True)
        if (index := np.flatnonzero(np.asarray(mask))).size
    ]
    if lines:
        raise RuntimeError("\n  - ".join(["log_likelihood failed:", *lines]))
    return out


@eqx.filter_jit
def _solve(
    model,
    sde,
    x,
    tols,
    solver,
    auto_dt0,
    divergence,
    key,
    prior,
    t_start,
    cond,
    indices,
    max_steps,
    time_variable,
    state_variable,
    error_norm,
    adjoint,
) -> LikelihoodResult:
    per_step, per_start = _evaluations_per_step(solver)
    data_shape = x.shape[1:]
    # Checked while tracing, so a call that reuses the compiled solve pays nothing for it.
    cond0 = None if cond is None else jax.tree.map(lambda c: c[0], cond)
    score_shape = jax.eval_shape(lambda y: model(t_start, y, cond0), x[0]).shape
    if score_shape != data_shape:
        raise ValueError(
            f"`x` must hold examples of the shape the model maps to itself; the model maps {data_shape} to "
            f"{score_shape}"
        )
    rtol, atol, dt0 = tols[0], tols[1], tols[2]
    prior_log_prob = sde.prior_log_prob if prior is None else prior.log_prob
    t_end = jnp.asarray(sde.T, x.dtype)
    u0 = time_variable.to_u(sde, t_start)
    u1 = time_variable.to_u(sde, t_end)
    d = math.prod(data_shape)
    density_scale = error_norm.density_scale  # integrate K delta: see AbstractErrorNorm

    def vector_field(u, state, args):
        model_, sde_, probes, cond_ = args
        y, _ = state
        t, dt_du = time_variable.t_and_dt_du(sde_, u, t_start, t_end)
        log_c = state_variable.log_scale(sde_, t)
        c = jnp.exp(log_c).astype(y.dtype)
        score, div_score = divergence(lambda z: model_(t, z, cond_), c * y, probes)
        f = state_variable.drift_coeff(sde_, t)
        half_g2 = 0.5 * sde_.diffusion(t) ** 2
        dy = (f * y - (half_g2 / c) * score) * dt_du
        ddelta = (f * d - half_g2 * div_score) * dt_du
        return dy, density_scale * ddelta

    term = diffrax.ODETerm(vector_field)
    controller = diffrax.PIDController(rtol=rtol, atol=atol, norm=error_norm)

    def solve_one(xi, index, cond_i):
        probes = divergence.init(None if key is None else jax.random.fold_in(key, index), xi)
        delta0 = jnp.zeros((divergence.num_estimates,), xi.dtype)
        sol = diffrax.diffeqsolve(
            term,
            solver,
            u0,
            u1,
            None if auto_dt0 else dt0,
            (state_variable.to_state(sde, t_start, xi), delta0),
            args=(model, sde, probes, cond_i),
            stepsize_controller=controller,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=max_steps,
            adjoint=adjoint,
            throw=False,
        )
        x_end, delta = jax.tree.map(lambda a: a[-1], sol.ys)
        return x_end, delta, sol.result, sol.stats["num_steps"]

    y_end, deltas, result, num_steps = jax.vmap(solve_one)(x, indices, cond)
    x_end = jax.vmap(lambda y: state_variable.to_data(sde, t_end, y))(y_end)
    prior_lp = jax.vmap(prior_log_prob)(x_end).astype(x.dtype)
    # change of variables x = c(t) y at both ends
    log_jac = d * (state_variable.log_scale(sde, t_end) - state_variable.log_scale(sde, t_start))
    deltas = deltas / density_scale + log_jac.astype(x.dtype)
    delta = jnp.mean(deltas, axis=1)
    m = divergence.num_estimates
    if isinstance(divergence, ExactTrace):
        stderr = jnp.zeros_like(delta)
    elif m == 1:
        stderr = jnp.full_like(delta, jnp.nan)
    else:
        stderr = jnp.std(deltas, axis=1, ddof=1) / math.sqrt(m)

    log_prob = prior_lp + delta
    nfe = (per_start + per_step * num_steps).astype(jnp.int32)
    return LikelihoodResult(
        log_prob=log_prob,
        prior_log_prob=prior_lp,
        delta_log_prob=delta,
        stderr=stderr,
        t0=t_start,
        nfe=nfe,
        num_steps=num_steps.astype(jnp.int32),
        result=result,
    )
