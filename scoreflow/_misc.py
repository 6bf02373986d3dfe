"""Small numerical helpers shared by the core modules."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike


def as_float(x: ArrayLike) -> Array:
    """Convert to a floating array of at least float32 (float64 stays float64)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.dtype in (jnp.float16, jnp.bfloat16):
        x = x.astype(jnp.float32)
    return x


def check_time(t: Array, t_max: float | Array, name: str = "t") -> Array:
    """Raise (also under jit, through `eqx.error_if`) if `t` lies outside `[0, t_max]` or is NaN."""
    bad = ~((t >= 0) & (t <= t_max))
    return eqx.error_if(t, bad, f"`{name}` must lie in [0, T] (T = end time of the process); got a value outside it")
