import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def sliced_wasserstein(
    x: Float[Array, " n *data"],
    y: Float[Array, " n *data"],
    *,
    key: PRNGKeyArray,
    num_projections: int = 256,
) -> Float[Array, ""]:
    r"""Sliced Wasserstein-2 distance between two equal-size samples.

    $\mathrm{SW}_2 = \big(\tfrac1P\sum_p \tfrac1n\sum_i (\mathrm{sort}(x u_p)_i - \mathrm{sort}(y u_p)_i)^2\big)^{1/2}$
    over `num_projections` random unit directions $u_p$ (Bonneel et al., 2015). Examples are flattened.
    """
    if x.shape != y.shape or x.ndim < 2:
        raise ValueError(
            f"`x` and `y` must be samples of equal shape (n, *data); got {x.shape} and {y.shape}"
        )
    if num_projections < 1:
        raise ValueError(f"`num_projections` must be >= 1; got {num_projections}")
    n = x.shape[0]
    x, y = x.reshape(n, -1), y.reshape(n, -1)
    u = jax.random.normal(key, (num_projections, x.shape[1]), x.dtype)
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    px, py = jnp.sort(x @ u.T, axis=0), jnp.sort(y @ u.T, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))
