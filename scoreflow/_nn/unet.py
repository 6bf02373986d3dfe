"""A small U-Net for images (8x8 to 32x32), in the shape of DDPM's (Ho et al., 2020)."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
from einops import rearrange, repeat
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._custom_types import ScalarLike
from .embedding import AbstractEmbedding, LabelEmbedding, SinusoidalEmbedding, check_unconditional


def _dropout(x: Float[Array, "..."], rate: float, key: PRNGKeyArray | None) -> Float[Array, "..."]:
    """Inverted dropout; the identity when `key` is None or `rate` is 0 (evaluation)."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _conv(conv: eqx.nn.Conv2d, x: Float[Array, "c_in h w"]) -> Float[Array, "c_out h2 w2"]:
    """`conv(x)` computed channels-last. On XLA:CPU a channels-first convolution inside a loop (`lax.scan`,
    diffrax's while loop: every sampler and likelihood solve) runs ~40x slower than the same convolution outside
    one (jax-ml/jax#12868); channels-last does not. The parameters keep equinox's layout, so checkpoints and
    initialisation are unchanged; the two transposes are cheap next to the convolution."""
    y = jax.lax.conv_general_dilated(
        jnp.transpose(x, (1, 2, 0))[None],
        jnp.transpose(conv.weight, (2, 3, 1, 0)),  # OIHW -> HWIO
        conv.stride,
        conv.padding,
        rhs_dilation=conv.dilation,
        feature_group_count=conv.groups,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )[0]
    y = jnp.transpose(y, (2, 0, 1))
    return y if conv.bias is None else y + conv.bias


class ResBlock(eqx.Module):
    r"""$x \mapsto S x + \mathrm{Conv}(\mathrm{Drop}(\mathrm{SiLU}(\mathrm{GN}(
    \mathrm{Conv}(\mathrm{SiLU}(\mathrm{GN}(x))) + P\,\mathrm{SiLU}(e)))))$ with $S$ a 1x1 conv when
    the channel count changes (else the identity) and $e$ the time(+class) embedding."""

    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    proj: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None
    dropout: float = eqx.field(static=True)

    def __init__(
        self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float, *, key: PRNGKeyArray
    ):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.norm1 = eqx.nn.GroupNorm(groups, c_in)
        self.conv1 = eqx.nn.Conv2d(c_in, c_out, 3, padding=1, key=k1)
        self.proj = eqx.nn.Linear(emb_dim, c_out, key=k2)
        self.norm2 = eqx.nn.GroupNorm(groups, c_out)
        self.conv2 = eqx.nn.Conv2d(c_out, c_out, 3, padding=1, key=k3)
        self.skip = None if c_in == c_out else eqx.nn.Conv2d(c_in, c_out, 1, key=k4)
        self.dropout = dropout

    def __call__(
        self, x: Float[Array, "ci h w"], emb: Float[Array, " e"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "co h w"]:
        h = _conv(self.conv1, jax.nn.silu(self.norm1(x)))
        h = h + rearrange(self.proj(jax.nn.silu(emb)), "c -> c 1 1")
        h = _dropout(jax.nn.silu(self.norm2(h)), self.dropout, key)
        h = _conv(self.conv2, h)
        return (x if self.skip is None else _conv(self.skip, x)) + h


class AttentionBlock(eqx.Module):
    r"""Multi-head self-attention over the $H W$ spatial positions, with a residual connection:
    $x + \mathrm{MHA}(\mathrm{GN}(x))$ (Vaswani et al., 2017; as placed in DDPM's U-Net).

    It treats positions as a set (no positional encoding), so permuting the positions permutes the
    output.
    """

    norm: eqx.nn.GroupNorm
    attn: eqx.nn.MultiheadAttention

    def __init__(self, channels: int, num_heads: int, groups: int, *, key: PRNGKeyArray):
        self.norm = eqx.nn.GroupNorm(groups, channels)
        self.attn = eqx.nn.MultiheadAttention(
            num_heads,
            channels,
            use_query_bias=True,
            use_key_bias=True,
            use_value_bias=True,
            use_output_bias=True,
            key=key,
        )

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, "c h w"]:
        _, height, width = x.shape
        tokens = rearrange(self.norm(x), "c h w -> (h w) c")
        out = self.attn(tokens, tokens, tokens)
        return x + rearrange(out, "(h w) c -> c h w", h=height, w=width)


class _Level(eqx.Module):
    """One resolution's residual blocks (each maybe followed by attention), then a resampler."""

    blocks: list[ResBlock]
    attns: list[AttentionBlock | None]
    resample: eqx.nn.Conv2d | None


def _check_int(name: str, value: object, minimum: int) -> None:
    if not (isinstance(value, int) and value >= minimum):
        raise ValueError(f"UNet needs `{name}` to be an int >= {minimum}; got {name}={value!r}")


class UNet(eqx.Module):
    r"""U-Net network $F(c_{noise}, x, y)$ on one image $x$ of shape
    (in_channels, image_size, image_size).

    Level $i$ works at resolution image_size / 2^i with `channels[i]` channels: `num_res_blocks`
    residual blocks (GroupNorm, SiLU, 3x3 convs, the time(+class) embedding added after the first
    conv, dropout before the second), each followed by multi-head self-attention when the resolution
    is in `attention_resolutions`; a stride-2 conv halves the resolution between levels. The middle,
    at the lowest resolution, is ResBlock-attention-ResBlock. The decoder mirrors the encoder with
    `num_res_blocks + 1` blocks per level, each taking the matching encoder activation as a
    concatenated skip connection, and nearest-neighbour upsampling followed by a 3x3 conv (Ho et
    al., 2020; Ronneberger et al., 2015). The output conv is zero-initialised: a fresh network
    returns 0.

    Call as `net(c_noise, x, cond=None, *, key=None)`; dropout is applied only when `key` is given.
    `cond` is an integer class label when `num_classes` is set (label `num_classes`, also chosen by
    `cond=None`, is the null label for classifier-free guidance).
    """

    image_size: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    embedding: AbstractEmbedding
    time_mlp: eqx.nn.MLP
    label: LabelEmbedding | None
    conv_in: eqx.nn.Conv2d
    down: list[_Level]
    mid_block1: ResBlock
    mid_attn: AttentionBlock
    mid_block2: ResBlock
    up: list[_Level]
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        out_channels: int | None = None,
        channels: tuple[int, ...] = (32, 64, 64),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (8,),
        dropout: float = 0.0,
        num_classes: int | None = None,
        groups: int = 8,
        *,
        num_heads: int = 4,
        embedding: AbstractEmbedding | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `image_size` (height = width, divisible by 2^(len(channels) - 1)),
        `in_channels`, `out_channels` (default `in_channels`), `channels` (per level, each divisible
        by `groups` and at least `2 * groups`: with one channel per group the group norm would cancel
        the embedding), `num_res_blocks` (per level in the encoder), `attention_resolutions`
        (resolutions, among image_size / 2^i, that get self-attention), `dropout` (rate in [0, 1)),
        `num_classes` (None: unconditional), `groups` (GroupNorm groups), `num_heads` (attention
        heads, dividing the channels where attention is used), `embedding` (an
        `AbstractEmbedding`; default `SinusoidalEmbedding(channels[0])`), `key`."""
        _check_int("image_size", image_size, 1)
        _check_int("in_channels", in_channels, 1)
        out_channels = in_channels if out_channels is None else out_channels
        _check_int("out_channels", out_channels, 1)
        _check_int("num_res_blocks", num_res_blocks, 1)
        _check_int("groups", groups, 1)
        _check_int("num_heads", num_heads, 1)
        channels = tuple(channels)
        if len(channels) == 0 or not all(isinstance(c, int) and c >= 1 for c in channels):
            raise ValueError(
                "UNet needs `channels` to be a non-empty tuple of ints >= 1;"
                f" got channels={channels!r}"
            )
        bad = [c for c in channels if c % groups]
        if bad:
            raise ValueError(
                f"UNet needs every entry of `channels` divisible by `groups`={groups};"
                f" got channels={channels!r}"
            )
        factor = 2 ** (len(channels) - 1)
        if image_size % factor:
            raise ValueError(
                f"UNet needs `image_size` divisible by 2^(len(channels) - 1) = {factor}"
                f" (one halving per level); got image_size={image_size}, channels={channels!r}"
            )
        resolutions = [image_size // 2**i for i in range(len(channels))]
        unknown = [r for r in attention_resolutions if r not in resolutions]
        if unknown:
            raise ValueError(
                f"UNet: `attention_resolutions`={tuple(attention_resolutions)!r} must be among"
                f" the resolutions {tuple(resolutions)} of this network"
            )
        attn_channels = [
            c for c, r in zip(channels, resolutions, strict=True) if r in attention_resolutions
        ] + [channels[-1]]
        if any(c % num_heads for c in attn_channels):
            raise ValueError(
                f"UNet needs `num_heads`={num_heads} to divide the channels {attn_channels}"
                " where attention is used"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"UNet needs `dropout` in [0, 1); got dropout={dropout!r}")
        thin = sorted({c for c in channels if c < 2 * groups})
        if thin:
            # A residual block adds the embedding as one shift per channel and then group-normalises;
            # with one channel per group the norm subtracts that shift exactly, so those blocks would
            # not see the noise level or the class label (silently).
            raise ValueError(
                f"UNet needs at least 2 channels per GroupNorm group; got groups={groups} with"
                f" channels={channels!r} (one channel per group at {thin}, where the group norm would"
                " cancel the time and class embedding); use groups <="
                f" {max(min(channels) // 2, 1)} or more channels"
            )
        if embedding is None:
            embedding = SinusoidalEmbedding(
                channels[0] if channels[0] % 2 == 0 else channels[0] + 1
            )
        elif not isinstance(embedding, AbstractEmbedding):
            raise TypeError(
                f"`embedding` must be an AbstractEmbedding; got {type(embedding).__name__}"
            )

        # The label table has its own key, so that a network with and one without `num_classes`
        # built from the same key share every other weight.
        key, k_label = jax.random.split(key)
        keys = (jax.random.fold_in(key, i) for i in itertools.count())
        emb_dim = 4 * channels[0]
        self.image_size, self.in_channels, self.out_channels = image_size, in_channels, out_channels
        self.embedding = embedding
        self.time_mlp = eqx.nn.MLP(
            embedding.dim, emb_dim, emb_dim, 1, activation=jax.nn.silu, key=next(keys)
        )
        self.label = (
            None if num_classes is None else LabelEmbedding(num_classes, emb_dim, key=k_label)
        )
        self.conv_in = eqx.nn.Conv2d(in_channels, channels[0], 3, padding=1, key=next(keys))

        def res(ci, co):
            return ResBlock(ci, co, emb_dim, groups, dropout, key=next(keys))

        def attn(c, r):
            return (
                AttentionBlock(c, num_heads, groups, key=next(keys))
                if r in attention_resolutions
                else None
            )

        skip_channels = [channels[0]]
        down = []
        c_prev = channels[0]
        for i, (c, r) in enumerate(zip(channels, resolutions, strict=True)):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(res(c_prev, c))
                attns.append(attn(c, r))
                c_prev = c
                skip_channels.append(c)
            last = i == len(channels) - 1
            resample = None if last else eqx.nn.Conv2d(c, c, 3, stride=2, padding=1, key=next(keys))
            if not last:
                skip_channels.append(c)
            down.append(_Level(blocks, attns, resample))
        self.down = down
        self.mid_block1 = res(c_prev, c_prev)
        self.mid_attn = AttentionBlock(c_prev, num_heads, groups, key=next(keys))
        self.mid_block2 = res(c_prev, c_prev)
        up = []
        for i in reversed(range(len(channels))):
            c, r = channels[i], resolutions[i]
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(res(c_prev + skip_channels.pop(), c))
                attns.append(attn(c, r))
                c_prev = c
            resample = None if i == 0 else eqx.nn.Conv2d(c, c, 3, padding=1, key=next(keys))
            up.append(_Level(blocks, attns, resample))
        self.up = up
        self.norm_out = eqx.nn.GroupNorm(groups, c_prev)
        conv_out = eqx.nn.Conv2d(c_prev, out_channels, 3, padding=1, key=next(keys))
        self.conv_out = eqx.tree_at(
            lambda m: (m.weight, m.bias),
            conv_out,
            (jnp.zeros_like(conv_out.weight), jnp.zeros_like(conv_out.bias)),
        )

    def __call__(
        self,
        c_noise: ScalarLike,
        x: Float[Array, "c h w"],
        cond: Int[ArrayLike, ""] | None = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "co h w"]:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.shape != expected:
            raise ValueError(
                f"UNet: `x` must be one image of shape {expected} (C, H, W); got shape {x.shape}"
            )
        emb = self.time_mlp(self.embedding(c_noise).astype(x.dtype))
        if self.label is None:
            check_unconditional(cond)
        else:
            emb = emb + self.label(cond)
        n_blocks = sum(len(level.blocks) for level in self.down + self.up) + 2
        keys = iter([None] * n_blocks if key is None else list(jax.random.split(key, n_blocks)))

        h = _conv(self.conv_in, x)
        skips = [h]
        for level in self.down:
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = block(h, emb, key=next(keys))
                h = h if attn is None else attn(h)
                skips.append(h)
            if level.resample is not None:
                h = _conv(level.resample, h)
                skips.append(h)
        h = self.mid_block2(
            self.mid_attn(self.mid_block1(h, emb, key=next(keys))), emb, key=next(keys)
        )
        for level in self.up:
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = block(jnp.concatenate([h, skips.pop()]), emb, key=next(keys))
                h = h if attn is None else attn(h)
            if level.resample is not None:
                h = _conv(level.resample, repeat(h, "c h w -> c (h a) (w b)", a=2, b=2))
        return _conv(self.conv_out, jax.nn.silu(self.norm_out(h)))
