"""Bits per dimension of discrete data under a continuous model."""

import math
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._misc import as_key, check_int, per_example_error_if
from .dequantisation import AbstractDequantisation, AffineScaling, UniformDequantisation
from .log_likelihood import LikelihoodResult


class BitsPerDimResult(eqx.Module):
    """Per example: `bits_per_dim` (the Monte Carlo mean over dequantisation samples of the bound),
    `stderr` (its standard error over those samples; NaN with one sample) and `log_prob` (the bound on
    log P(data) in nats)."""

    bits_per_dim: Float[Array, " batch"]
    stderr: Float[Array, " batch"]
    log_prob: Float[Array, " batch"]


_UNIFORM = UniformDequantisation()


def bits_per_dim(
    log_density: Callable[..., Array | LikelihoodResult],
    data: Int[Array, " batch *data"],
    *,
    num_levels: int,
    key: PRNGKeyArray,
    scaling: AffineScaling | None = None,
    dequantisation: AbstractDequantisation = _UNIFORM,
) -> BitsPerDimResult:
    r"""Bits/dim $-\log_2 P(k)/d$ of integer data $k \in \{0,\dots,K-1\}^d$ under a continuous density.

    `log_density(x, key)` gives per-example nats of the continuous model at a batch `x` in model space,
    e.g. `lambda x, key: sf.log_likelihood(model, sde, x, key=key)` (a `LikelihoodResult` is accepted).
    `scaling` maps levels to model space (default `AffineScaling.symmetric(num_levels)`: data in [-1, 1]);
    `dequantisation` turns the density into a lower bound on the discrete probability, including the
    log-Jacobian of the scaling and the bin width, so the result is an upper bound on the true bits/dim,
    non-negative in expectation, and exactly $\log_2 K$ for a density uniform over the data range.
    """
    check_int("bits_per_dim", "num_levels", num_levels, 2)
    if not callable(log_density):
        raise TypeError(f"`log_density` must be a callable log_density(x, key); got log_density={log_density!r}")
    key = as_key("key", key)
    if key.shape != ():
        raise ValueError(f"`key` must be a single PRNG key; got a key array of shape {key.shape}")
    if scaling is None:
        scaling = AffineScaling.symmetric(num_levels)
    if not isinstance(scaling, AffineScaling):
        raise TypeError(f"`scaling` must be an AffineScaling or None; got {scaling!r}")
    if not isinstance(dequantisation, AbstractDequantisation):
        raise TypeError(
            f"`dequantisation` must be UniformDequantisation() or DiscretisedBound(sde); got {dequantisation!r}"
        )
    data = jnp.asarray(data)
    if not jnp.issubdtype(data.dtype, jnp.integer):
        raise TypeError(
            f"`data` must hold integer levels in [0, num_levels); got dtype {data.dtype} (for levels stored as "
            "floats, pass data.astype(jnp.int32); for continuous data use log_likelihood)"
        )
    if data.ndim < 2:
        raise ValueError(f"`data` must be a batch of shape (batch, *data); got shape {data.shape}")
    batch = data.shape[0]
    flat = data.reshape(batch, math.prod(data.shape[1:]))
    data = per_example_error_if(
        data,
        jnp.any((flat < 0) | (flat >= num_levels), axis=1),
        f"`data` must hold integer levels in [0, num_levels) = [0, {num_levels}); got levels outside it in "
        "{examples}",
    )

    def density(x, k):
        out = log_density(x, k)
        out = out.log_prob if isinstance(out, LikelihoodResult) else jnp.asarray(out)
        if out.shape != (batch,) or not jnp.issubdtype(out.dtype, jnp.floating):
            raise ValueError(
                f"`log_density(x, key)` must return one log-density per example, a float array of shape ({batch},) "
                f"(or a LikelihoodResult); got {out.dtype} array of shape {out.shape}"
            )
        return out

    samples = dequantisation.log_prob_bound(density, data, num_levels, scaling, key)
    samples = per_example_error_if(
        samples,
        ~jnp.all(jnp.isfinite(samples), axis=0),
        "bits_per_dim: the log-probability bound is not finite for {examples} (check what `log_density` returns there)",
        error=RuntimeError,
    )
    d = math.prod(data.shape[1:])
    to_bits = -1.0 / (d * math.log(2.0))
    log_prob = jnp.mean(samples, axis=0)
    n = samples.shape[0]
    stderr = jnp.full_like(log_prob, jnp.nan) if n == 1 else jnp.std(samples, axis=0, ddof=1) / math.sqrt(n) * -to_bits
    return BitsPerDimResult(bits_per_dim=to_bits * log_prob, stderr=stderr, log_prob=log_prob)
