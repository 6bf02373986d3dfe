"""Small numerical helpers shared by the core modules, and the argument checks that make failures loud."""

import math
import numbers
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
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
    return eqx.error_if(
        t,
        bad,
        f"`{name}` must lie in [0, T] (T = end time of the process); got a value outside it or NaN (an adaptive "
        "solver proposes NaN times when its state is non-finite: check the inputs and the model's output)",
    )


def is_traced(*xs) -> bool:
    """Whether any leaf is a tracer (inside `jit`, `vmap`, `grad`): its values are then unknown in Python."""
    return any(isinstance(leaf, Tracer) for leaf in jax.tree_util.tree_leaves(xs))


def name_examples(index: Sequence[int] | np.ndarray, batch: int, limit: int = 10) -> str:
    """'example 3 of 8' / 'examples 1, 4 and 7 of 8' / the first `limit` and how many more."""
    index = [int(i) for i in index]
    n = len(index)
    shown = ", ".join(map(str, index[:limit]))
    if n == 1:
        return f"example {shown} of {batch}"
    if n > limit:
        return f"{n} of {batch} examples ({shown} and {n - limit} more)"
    head, _, last = shown.rpartition(", ")
    return f"{n} of {batch} examples ({head} and {last})"


def per_example_error_if(x, bad: Array, message: str, error: type[Exception] = ValueError):
    """Return `x`, raising if any entry of the per-example mask `bad` (shape `(batch,)`) is set.

    `message` has an `{examples}` field. Outside `jit` the mask is concrete: this raises `error` at once with
    the failing examples named there ('examples 1 and 4 of 8'; one host sync). Under `jit`/`vmap` the values
    are unknown at trace time and `eqx.error_if` only carries a static message, so it raises equinox's
    `EquinoxRuntimeError` with 'at least one example' there.
    """
    if is_traced(bad):
        return eqx.error_if(x, jnp.any(bad), message.format(examples="at least one example"))
    index = np.flatnonzero(np.asarray(bad))
    if index.size:
        raise error(message.format(examples=name_examples(index, bad.shape[0])))
    return x


_KEY = "a JAX PRNG key from jax.random.key(seed){many}; uint32 keys from jax.random.PRNGKey(seed) also work"


def as_key(name: str, key, many: str = "") -> Array:
    """`key` as a typed PRNG key array (uint32 key data is wrapped), or a `TypeError` naming the argument."""
    expected = _KEY.format(many=many)
    if isinstance(key, np.ndarray):
        key = jnp.asarray(key)
    if not isinstance(key, jax.Array):
        raise TypeError(f"`{name}` must be {expected}; got {name}={key!r} ({type(key).__name__})")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype == jnp.uint32 and key.ndim >= 1:
        try:
            return jax.random.wrap_key_data(key)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"`{name}` must be {expected}; got a {key.dtype} array of shape {key.shape}")


def _describe(value) -> str:
    kind = type(value).__name__
    if isinstance(value, np.ndarray | jax.Array):
        kind = f"{value.dtype} array of shape {value.shape}"
    return f"{value!r} ({kind})"


def check_int(owner: str, name: str, value, minimum: int, maximum: int | None = None, hint: str = "") -> None:
    """Raise unless `value` is an integer (Python or NumPy, not bool) in `[minimum, maximum]`."""
    expected = f"an integer >= {minimum}" + ("" if maximum is None else f" and <= {maximum}") + hint
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner} needs `{name}` to be {expected}; got {name}={_describe(value)}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{owner} needs `{name}` to be {expected}; got {name}={value!r}")


def check_bool(owner: str, name: str, value) -> None:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{owner} needs `{name}` to be True or False; got {name}={_describe(value)}")


def check_real(
    owner: str,
    name: str,
    value,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    allow_inf: bool = False,
) -> None:
    """Raise unless `value` is a real scalar in `[low, high]` (`(low, high]` with `low_open`), finite unless
    `allow_inf`. A traced scalar (a field rebuilt inside `jit`) has no value to check and is let through."""
    if isinstance(value, Tracer):
        return
    real_dtype = lambda dt: jnp.issubdtype(dt, jnp.floating) or jnp.issubdtype(dt, jnp.integer)
    if isinstance(value, np.ndarray | jax.Array) and value.ndim == 0 and real_dtype(value.dtype):
        value_f = float(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        value_f = float(value)
    else:
        raise TypeError(f"{owner} needs `{name}` to be a real number; got {name}={_describe(value)}")
    left = "(" if low_open else "["
    expected = f"a {'' if allow_inf else 'finite '}number in {left}{low}, {high}]"
    ok = (value_f > low if low_open else value_f >= low) and value_f <= high
    if not ok or (not allow_inf and not math.isfinite(value_f)):
        raise ValueError(f"{owner} needs `{name}` to be {expected}; got {name}={value!r}")


def check_instance(owner: str, name: str, value, cls: type, expected: str) -> None:
    if not isinstance(value, cls):
        raise TypeError(f"{owner} needs `{name}` to be {expected}; got {name}={value!r} ({type(value).__name__})")
