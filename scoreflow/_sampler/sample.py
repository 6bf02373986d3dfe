"""`sample`: the one entry point that runs any sampler over a batch."""

import numbers
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Key, PRNGKeyArray, UInt32

from .._custom_types import Conditioning
from .._misc import as_key, is_traced, name_examples
from .._sde import AbstractSDE
from .base import AbstractSampler, Hook, SampleResult
from .distilled import check_sampler_for
from .probability_flow import ProbabilityFlow


def _per_example_keys(key, batch: int) -> Array:
    key = as_key("key", key, many=", or one key per example (shape (batch,))")
    if key.shape == ():
        return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch))
    if key.shape == (batch,):
        return key
    raise ValueError(f"`key` must be one key or one key per example (shape ({batch},)); got shape {key.shape}")


def _check_sde(sde: AbstractSDE, t0: float, dtype) -> None:
    """Eagerly, with throw=True: raise naming `sde` if its coefficients at `t0` or `T` (or its prior) are not
    finite, e.g. `LinearSchedule(beta_max=inf)`, rather than reporting every sample as non-finite. Skipped
    under jit (the values are unknown there; the per-example check on the outputs still catches it)."""
    values = {"prior std": jnp.asarray(sde.prior_std(), dtype)}
    for t in (t0, sde.T):
        tt = jnp.asarray(t, dtype)
        values[f"alpha({t})"], values[f"sigma({t})"] = sde.alpha_sigma(tt)
        values[f"g({t})"] = sde.diffusion(tt)
    if is_traced(values):
        return
    bad = {k: float(v) for k, v in values.items() if not np.all(np.isfinite(np.asarray(v)))}
    if bad:
        got = ", ".join(f"{k} = {v}" for k, v in bad.items())
        raise ValueError(
            f"`sde` has non-finite coefficients: {got}; expected finite alpha(t), sigma(t), diffusion g(t) on "
            f"[t0, T] = [{t0}, {sde.T}] and a finite prior (check its schedule's parameters); got sde={sde!r}"
        )


def _reasons(max_steps: int | None, t0: float) -> dict[str, str]:
    budget = "its `max_steps`" if max_steps is None else f"all max_steps={max_steps} steps"
    return {
        "nonfinite_input": "the start x_T has non-finite values (NaN or inf); expected finite values",
        "nonfinite": (
            "the sample has non-finite values (NaN or inf): the model's score or the SDE's coefficients were not "
            "finite somewhere on the path"
        ),
        "max_steps_reached": (
            f"the adaptive solve used {budget} before reaching t0 = {t0} (raise `max_steps`, loosen `rtol`/`atol` "
            "or pass `steps`; a model that returns NaN also ends here, as every step is rejected)"
        ),
    }


def _raise_failures(out, result: diffrax.RESULTS, sampler: AbstractSampler, t0: float):
    """Return `out` if every example succeeded, else raise naming the failed examples and why.

    Eagerly the statuses are concrete and one host sync reads them, so the message names every failed
    example. Under `jit` (or `vmap` of `sample`) it is `eqx.branched_error_if`, whose messages are static: it
    names the reason but cannot name the examples."""
    reasons = _reasons(getattr(sampler, "max_steps", None), t0)
    advice = "pass throw=False to get each example's status in SampleResult.result instead"
    failed = result != diffrax.RESULTS.successful
    if is_traced(failed):
        code = jnp.zeros(failed.shape, jnp.int32)
        for i, name in enumerate(reasons, start=1):
            code = jnp.where(result == getattr(diffrax.RESULTS, name), i, code)
        code = jnp.where(failed & (code == 0), len(reasons) + 1, code)
        msgs = ["", *(f"sf.sample: at least one example failed: {r}" for r in reasons.values())]
        msgs.append("sf.sample: at least one example's diffrax solve failed")
        msgs = [m + f" (under jit the failed examples cannot be named: {advice})" for m in msgs]
        return eqx.branched_error_if(out, jnp.any(failed), jnp.max(code), msgs)
    failed = np.asarray(failed)
    if not failed.any():
        return out
    batch = failed.shape[0]
    lines = []
    for name, text in reasons.items():
        index = np.flatnonzero(np.asarray(result == getattr(diffrax.RESULTS, name)))
        if index.size:
            lines.append(f"{name_examples(index, batch)}: {text}")
    known = np.zeros_like(failed)
    for name in reasons:
        known |= np.asarray(result == getattr(diffrax.RESULTS, name))
    for i in np.flatnonzero(failed & ~known):
        item = jax.tree.map(lambda v, i=i: v[i], result)
        lines.append(f"example {i} of {batch}: the diffrax solve failed: {diffrax.RESULTS[item]}")
    count = name_examples(np.flatnonzero(failed), batch)
    head = f"sf.sample with {type(sampler).__name__} failed for {count} ({advice}):"
    raise RuntimeError("\n  - ".join([head, *lines]))


def sample(
    model: Callable[..., Array],
    sde: AbstractSDE,
    key: PRNGKeyArray | Key[Array, " batch"] | UInt32[Array, "batch 2"],
    shape: tuple[int, ...],
    sampler: AbstractSampler | None = None,
    cond: Conditioning = None,
    t0: float | None = None,
    hook: Hook | None = None,
    x_T: Array | None = None,
    *,
    throw: bool = True,
) -> SampleResult:
    r"""Draw `shape[0]` samples of shape `shape[1:]` from the reverse process of `sde` driven by `model`.

    **Arguments:**
    - `model`: a score model acting on one example, `model(t, x, cond)` (e.g. `ScoreModel`, `AnalyticScore`),
      returning an array of x's shape (cast to x's dtype).
    - `sde`: the forward SDE; $x_T \sim$ `sde.prior`.
    - `key`: one PRNG key from `jax.random.key(seed)` (example $i$ then uses `jax.random.fold_in(key, i)`, so
      its sample does not depend on the batch size) or one key per example.
    - `shape`: `(batch, *data_shape)`.
    - `sampler`: an `AbstractSampler`; default `ProbabilityFlow()` (adaptive Tsit5).
    - `cond`: conditioning pytree with a leading batch axis on every leaf (one entry per example), or None.
    - `t0`: end time of the grid (default `sde.t0`); samplers that finish with a jump to $\sigma = 0$ report
      `SampleResult.t0 = 0`.
    - `hook`: `hook(t, x) -> x` on one example, applied after every predictor and corrector step of a
      fixed-step sampler (e.g. inpainting by replacement, Song et al. 2021).
    - `x_T`: optional starting states at time `sde.T`, shape `shape`, in place of draws from `sde.prior` (e.g.
      exact draws of the true marginal $p_T$, to measure a sampler apart from the prior mismatch; or fixed
      latents for interpolation). The keys then drive only the samplers' own noise. Any floating dtype is
      cast to the default one (float32, or float64 with `jax_enable_x64`), the dtype of the prior draws and of
      the samples; integer `x_T` is refused.
    - `throw`: what to do when an example fails: its sample is non-finite (NaN or inf, e.g. from a model that
      returns NaN or an SDE whose coefficients overflow), its `x_T` is, or an adaptive solve runs out of
      `max_steps`. With `throw=True` (the default, as in diffrax) `sample` raises: outside `jit` a
      `ValueError` before any work for a non-finite `x_T` or SDE coefficients, else a `RuntimeError` that names
      the failed examples and why; under `jit` an `equinox.EquinoxRuntimeError` (also a `RuntimeError`) that
      names the reason only (`eqx.error_if` messages are static). With `throw=False` nothing is raised for
      these: `SampleResult.result` holds each example's status and `successful` is False for failed examples
      (see `SampleResult`). Invalid arguments (types, shapes, ranges) raise either way.

    **Returns:** a `SampleResult(samples, nfe, result, t0)`.
    """
    if sampler is None:
        sampler = ProbabilityFlow()
    if not isinstance(sampler, AbstractSampler):
        raise TypeError(f"`sampler` must be an AbstractSampler (e.g. ProbabilityFlow()); got sampler={sampler!r}")
    if not isinstance(sde, AbstractSDE):
        raise TypeError(f"`sde` must be an AbstractSDE (e.g. VPSDE(LinearSchedule())); got sde={sde!r}")
    if not callable(model):
        raise TypeError(f"`model` must be a callable model(t, x, cond); got model={model!r}")
    check_sampler_for(model, sampler)  # a distilled model samples on its own grid only
    if hook is not None and not callable(hook):
        raise TypeError(f"`hook` must be a callable hook(t, x) -> x or None; got hook={hook!r}")
    if not isinstance(throw, bool):
        raise TypeError(f"`throw` must be True or False; got throw={throw!r}")
    shape = tuple(shape)
    if len(shape) < 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"`shape` must be (batch, *data_shape) of positive ints; got shape={shape}")
    shape = tuple(int(s) for s in shape)
    try:
        t0 = float(sde.t0 if t0 is None else t0)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`t0` must be a number in [0, T) = [0, {sde.T}) or None; got t0={t0!r}") from e
    if not 0.0 <= t0 < sde.T:
        raise ValueError(f"`t0` must lie in [0, T) = [0, {sde.T}); got t0={t0}")
    batch, data_shape = shape[0], shape[1:]
    keys = _per_example_keys(key, batch)
    if cond is not None:
        for leaf in jax.tree_util.tree_leaves(cond):
            if jnp.shape(leaf)[:1] != (batch,):
                raise ValueError(
                    f"every leaf of `cond` needs a leading batch axis of size {batch}; "
                    f"got a leaf of shape {jnp.shape(leaf)}"
                )
    dtype = jnp.result_type(float)
    if x_T is not None:
        if jnp.shape(x_T) != shape:
            raise ValueError(f"`x_T` must have shape `shape` = {shape}; got x_T.shape={jnp.shape(x_T)}")
        if not jnp.issubdtype(jnp.result_type(x_T), jnp.floating):
            raise TypeError(f"`x_T` must be a floating-point array; got dtype {jnp.result_type(x_T)}")
        x_T = jnp.asarray(x_T).astype(dtype)
    cond_one = jax.tree.map(lambda c: jax.ShapeDtypeStruct(jnp.shape(c)[1:], jnp.result_type(c)), cond)
    out = jax.eval_shape(model, jax.ShapeDtypeStruct((), dtype), jax.ShapeDtypeStruct(data_shape, dtype), cond_one)
    if getattr(out, "shape", None) != data_shape:
        raise ValueError(
            f"`model(t, x, cond)` must return the score of one example, an array of x's shape {data_shape}; got {out!r}"
        )
    if throw:
        _check_sde(sde, t0, dtype)
        if x_T is not None and not is_traced(x_T):
            bad = np.flatnonzero(~np.all(np.isfinite(np.asarray(x_T).reshape(batch, -1)), axis=1))
            if bad.size:
                raise ValueError(
                    f"`x_T` has non-finite values (NaN or inf) in {name_examples(bad, batch)}; expected finite "
                    f"starting states, e.g. x_T[{bad[0]}] = {np.asarray(x_T[bad[0]])}"
                )
    prior_std = sde.prior_std()

    def one(k, c, x_start):
        k_prior, k_sampler = jax.random.split(k)
        if x_start is None:
            x_start = prior_std * jax.random.normal(k_prior, data_shape, dtype)
        # A non-finite start is reported, not run: a NaN state would make an adaptive solver propose NaN times.
        start_ok = jnp.all(jnp.isfinite(x_start))
        score = lambda t, x: jnp.asarray(model(t, x, c), x.dtype)
        x, nfe, result = sampler.sample_one(score, sde, jnp.where(start_ok, x_start, 0), t0, k_sampler, hook)
        ok = jnp.all(jnp.isfinite(x)) | (result != diffrax.RESULTS.successful)
        result = diffrax.RESULTS.where(ok, result, diffrax.RESULTS.nonfinite)  # pyright: ignore[reportArgumentType]
        result = diffrax.RESULTS.where(start_ok, result, diffrax.RESULTS.nonfinite_input)  # pyright: ignore[reportArgumentType]
        return jnp.where(start_ok, x, x_start), nfe, result

    samples, nfe, result = jax.vmap(one)(keys, cond, x_T)
    if throw:
        samples, nfe, result = _raise_failures((samples, nfe, result), result, sampler, t0)
    return SampleResult(samples, nfe, result, sampler.end_time(t0))
