"""x0-prediction networks for D3PM: a small transformer for sequences, and an adapter that runs an image network
(e.g. `scoreflow.UNet`) on one-hot planes."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from einops import rearrange
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._custom_types import Conditioning, ScalarLike


def _time_features(s: ScalarLike, dim: int) -> Float[Array, " dim"]:
    """Sinusoidal features of the diffusion time $s \\in [0, 1]$ (scaled by 1000, as for DDPM's step index)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / half)
    arg = 1000.0 * jnp.asarray(s, jnp.result_type(float)) * freqs
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)])


class _Block(eqx.Module):
    norm1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    mlp: eqx.nn.MLP

    def __init__(self, dim: int, heads: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.norm1 = eqx.nn.LayerNorm(dim)
        self.attn = eqx.nn.MultiheadAttention(heads, dim, key=k1)
        self.norm2 = eqx.nn.LayerNorm(dim)
        self.mlp = eqx.nn.MLP(dim, dim, 4 * dim, 1, activation=jax.nn.gelu, key=k2)

    def __call__(self, h: Float[Array, "L d"]) -> Float[Array, "L d"]:
        y = jax.vmap(self.norm1)(h)
        h = h + self.attn(y, y, y)
        return h + jax.vmap(self.mlp)(jax.vmap(self.norm2)(h))


class SequenceTransformer(eqx.Module):
    r"""Bidirectional pre-LayerNorm transformer $x_t \mapsto$ logits of $\tilde p_\theta(x_0 \mid x_t)$ for one
    sequence of `seq_len` tokens in $[0, S)$ (Vaswani et al., 2017; as the x0-network of D3PM's text runs).

    Token + learned position + sinusoidal-time embeddings, `depth` blocks of self-attention and a GELU MLP, a
    linear head to `num_states` logits per position. Call as `net(s, x_t, cond=None, *, key=None)`, with
    $s = t/T$. Unconditional: `cond` must be None."""

    num_states: int = eqx.field(static=True)
    seq_len: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    token: eqx.nn.Embedding
    position: Float[Array, "L d"]
    time_mlp: eqx.nn.MLP
    blocks: list[_Block]
    norm_out: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, num_states: int, seq_len: int, dim: int = 64, depth: int = 2, heads: int = 4, *,
                 key: PRNGKeyArray):
        """**Arguments:** `num_states` $S$, `seq_len` $L$, `dim` (divisible by `heads`, even), `depth`, `heads`,
        `key`."""
        if not (dim % heads == 0 and dim % 2 == 0):
            raise ValueError(f"SequenceTransformer needs an even `dim` divisible by `heads`; got dim={dim}, "
                             f"heads={heads}")
        k_tok, k_pos, k_time, k_blocks, k_head = jax.random.split(key, 5)
        self.num_states, self.seq_len, self.dim = num_states, seq_len, dim
        self.token = eqx.nn.Embedding(num_states, dim, key=k_tok)
        self.position = 0.02 * jax.random.normal(k_pos, (seq_len, dim))
        self.time_mlp = eqx.nn.MLP(dim, dim, dim, 1, activation=jax.nn.silu, key=k_time)
        self.blocks = [_Block(dim, heads, key=k) for k in jax.random.split(k_blocks, depth)]
        self.norm_out = eqx.nn.LayerNorm(dim)
        self.head = eqx.nn.Linear(dim, num_states, key=k_head)

    def __call__(
        self, s: ScalarLike, x_t: Int[Array, " L"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "L S"]:
        if cond is not None:
            raise ValueError("SequenceTransformer is unconditional: `cond` must be None")
        if x_t.shape != (self.seq_len,):
            raise ValueError(f"SequenceTransformer: `x_t` must have shape ({self.seq_len},); got {x_t.shape}")
        h = jax.vmap(self.token)(x_t) + self.position + self.time_mlp(_time_features(s, self.dim))[None, :]
        for block in self.blocks:
            h = block(h)
        return jax.vmap(self.head)(jax.vmap(self.norm_out)(h))


class ImageX0Net(eqx.Module):
    r"""Runs an image network on one-hot planes: $x_t$ of shape (C, H, W) with states in $[0, S)$ becomes $C S$
    one-hot planes; `network(s, planes, cond, key=key)` must return $C S$ planes, read as logits of shape
    (C, H, W, S). Build it with e.g. `scoreflow.UNet(8, in_channels=C * S, out_channels=C * S, ...)`."""

    network: eqx.Module
    num_states: int = eqx.field(static=True)

    def __call__(
        self, s: ScalarLike, x_t: Int[Array, "c h w"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "c h w S"]:
        planes = rearrange(jax.nn.one_hot(x_t, self.num_states, dtype=jnp.result_type(float)), "c h w s -> (c s) h w")
        out = self.network(s, planes, cond, key=key)
        return rearrange(out, "(c s) h w -> c h w s", s=self.num_states)
