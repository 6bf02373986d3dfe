"""A residual MLP for vector data."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._custom_types import ScalarLike
from .embedding import AbstractEmbedding, LabelEmbedding, SinusoidalEmbedding, check_unconditional


def _check_positive(name: str, value: object) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"MLP needs `{name}` to be an int >= 1; got {name}={value!r}")


class _Block(eqx.Module):
    r"""$h + W_2\,\mathrm{SiLU}(W_1\,\mathrm{SiLU}(h) + P\,\mathrm{SiLU}(e))$, with $e$ the
    time(+class) embedding."""

    lin1: eqx.nn.Linear
    lin2: eqx.nn.Linear
    proj: eqx.nn.Linear

    def __init__(self, width: int, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        self.lin1 = eqx.nn.Linear(width, width, key=k1)
        self.lin2 = eqx.nn.Linear(width, width, key=k2)
        self.proj = eqx.nn.Linear(width, width, key=k3)

    def __call__(self, h: Float[Array, " w"], emb: Float[Array, " w"]) -> Float[Array, " w"]:
        r = self.lin1(jax.nn.silu(h)) + self.proj(jax.nn.silu(emb))
        return h + self.lin2(jax.nn.silu(r))


class MLP(eqx.Module):
    r"""Residual MLP network $F(c_{noise}, x, y)$ on one vector $x$ of size `data_dim`.

    The noise level goes through `embedding` (sinusoidal by default) and a two-layer SiLU MLP to a
    vector $e$ of size `width`; with `num_classes` set, a learned label vector is added to $e$
    (label `num_classes`, also chosen by `cond=None`, is the null label for classifier-free
    guidance). `depth` residual blocks each add a projection of $e$. The last layer is
    zero-initialised, so a fresh network returns 0 (leaving only the parameterisation's skip path).

    Call as `net(c_noise, x, cond=None, *, key=None)`; `key` belongs to the network contract and is
    unused (no dropout).
    """

    data_dim: int = eqx.field(static=True)
    embedding: AbstractEmbedding
    time_mlp: eqx.nn.MLP
    label: LabelEmbedding | None
    inp: eqx.nn.Linear
    blocks: list[_Block]
    out: eqx.nn.Linear

    def __init__(
        self,
        data_dim: int,
        width: int = 256,
        depth: int = 3,
        embedding_dim: int = 64,
        num_classes: int | None = None,
        *,
        embedding: AbstractEmbedding | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `data_dim`, `width` (hidden size), `depth` (number of residual blocks),
        `embedding_dim` (size of the default sinusoidal embedding), `num_classes` (None:
        unconditional), `embedding` (an `AbstractEmbedding` to use instead of
        `SinusoidalEmbedding(embedding_dim)`), `key`."""
        for name, value in (("data_dim", data_dim), ("width", width), ("depth", depth)):
            _check_positive(name, value)
        if embedding is None:
            if not (
                isinstance(embedding_dim, int) and embedding_dim >= 2 and embedding_dim % 2 == 0
            ):
                raise ValueError(f"MLP needs an even `embedding_dim` >= 2; got {embedding_dim!r}")
            embedding = SinusoidalEmbedding(embedding_dim)
        elif not isinstance(embedding, AbstractEmbedding):
            raise TypeError(
                f"`embedding` must be an AbstractEmbedding; got {type(embedding).__name__}"
            )
        k_time, k_label, k_in, k_blocks, k_out = jax.random.split(key, 5)
        self.data_dim = data_dim
        self.embedding = embedding
        self.time_mlp = eqx.nn.MLP(
            embedding.dim, width, width, 1, activation=jax.nn.silu, key=k_time
        )
        self.label = (
            None if num_classes is None else LabelEmbedding(num_classes, width, key=k_label)
        )
        self.inp = eqx.nn.Linear(data_dim, width, key=k_in)
        self.blocks = [_Block(width, key=k) for k in jax.random.split(k_blocks, depth)]
        out = eqx.nn.Linear(width, data_dim, key=k_out)
        self.out = eqx.tree_at(
            lambda m: (m.weight, m.bias),
            out,
            (jnp.zeros_like(out.weight), jnp.zeros_like(out.bias)),
        )

    def __call__(
        self,
        c_noise: ScalarLike,
        x: Float[Array, " d"],
        cond: Int[ArrayLike, ""] | None = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " d"]:
        if x.shape != (self.data_dim,):
            raise ValueError(
                f"MLP: `x` must be one example of shape ({self.data_dim},); got shape {x.shape}"
            )
        emb = self.time_mlp(self.embedding(c_noise).astype(x.dtype))
        if self.label is None:
            check_unconditional(cond)
        else:
            emb = emb + self.label(cond)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(jax.nn.silu(h))
