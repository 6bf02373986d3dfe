"""`sample`: the one entry point that runs any sampler over a batch."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Key, PRNGKeyArray, UInt32

from .._custom_types import Conditioning
from .._sde import AbstractSDE
from .base import AbstractSampler, Hook, SampleResult
from .probability_flow import ProbabilityFlow


def _per_example_keys(key: Array, batch: int) -> Array:
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    if key.shape == ():
        return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch))
    if key.shape == (batch,):
        return key
    raise ValueError(
        f"`key` must be one key or one key per example (shape ({batch},)); got shape {key.shape}"
    )


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
) -> SampleResult:
    r"""Draw `shape[0]` samples of shape `shape[1:]` from the reverse process of `sde` driven by `model`.

    **Arguments:**
    - `model`: a score model acting on one example, `model(t, x, cond)` (e.g. `ScoreModel`, `AnalyticScore`).
    - `sde`: the forward SDE; $x_T \sim$ `sde.prior`.
    - `key`: one PRNG key (example $i$ then uses `jax.random.fold_in(key, i)`, so its sample does not depend
      on the batch size) or one key per example.
    - `shape`: `(batch, *data_shape)`.
    - `sampler`: an `AbstractSampler`; default `ProbabilityFlow()` (adaptive Tsit5).
    - `cond`: conditioning pytree with a leading batch axis on every leaf (one entry per example), or None.
    - `t0`: end time of the grid (default `sde.t0`); samplers that finish with a jump to $\sigma = 0$ report
      `SampleResult.t0 = 0`.
    - `hook`: `hook(t, x) -> x` on one example, applied after every predictor and corrector step of a
      fixed-step sampler (e.g. inpainting by replacement, Song et al. 2021).
    - `x_T`: optional starting states at time `sde.T`, shape `shape`, in place of draws from `sde.prior` (e.g.
      exact draws of the true marginal $p_T$, to measure a sampler apart from the prior mismatch; or fixed
      latents for interpolation). The keys then drive only the samplers' own noise.

    **Returns:** a `SampleResult(samples, nfe, result, t0)`.
    """
    if sampler is None:
        sampler = ProbabilityFlow()
    if not isinstance(sampler, AbstractSampler):
        raise TypeError(
            f"`sampler` must be an AbstractSampler (e.g. ProbabilityFlow()); got {type(sampler).__name__}"
        )
    shape = tuple(shape)
    if len(shape) < 2 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(
            f"`shape` must be (batch, *data_shape) of positive ints; got shape={shape}"
        )
    t0 = float(sde.t0 if t0 is None else t0)
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
    prior_std = sde.prior_std()

    def one(k, c, x_start):
        k_prior, k_sampler = jax.random.split(k)
        if x_start is None:
            x_start = prior_std * jax.random.normal(k_prior, data_shape, dtype)
        score = lambda t, x: model(t, x, c)
        return sampler.sample_one(score, sde, x_start, t0, k_sampler, hook)

    samples, nfe, result = jax.vmap(one)(keys, cond, x_T)
    return SampleResult(samples, nfe, result, sampler.end_time(t0))
