"""A PRNG key derived from a base key and the bits of (t, x), for callables that the samplers call without one."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray


_GOLDEN = 0x9E3779B1


def state_key(key: PRNGKeyArray, t: Array, x: Array) -> PRNGKeyArray:
    """`fold_in(key, hash(bits of t and x))`. `sf.sample` calls hooks as `hook(t, x)` and models as
    `model(t, x, cond)`, with no key; different examples and different steps have different states, so this gives
    each call its own stream, reproducibly. The hash is a weighted sum of the 32-bit words with odd weights (a change
    in any one word changes it); threefry's `fold_in` then scrambles it."""
    words = jnp.concatenate([_words(jnp.asarray(t)), _words(jnp.asarray(x))])
    weights = (2 * jnp.arange(words.shape[0], dtype=jnp.uint32) + 1) * jnp.uint32(_GOLDEN)
    return jax.random.fold_in(key, jnp.sum(words * weights, dtype=jnp.uint32))


def _words(a: Array) -> Array:
    a = jnp.reshape(a, (-1,))
    if a.dtype.itemsize == 8:
        return jax.lax.bitcast_convert_type(a, jnp.uint32).reshape(-1)
    if a.dtype.itemsize == 4:
        return jax.lax.bitcast_convert_type(a, jnp.uint32)
    return jax.lax.bitcast_convert_type(a.astype(jnp.float32), jnp.uint32)
