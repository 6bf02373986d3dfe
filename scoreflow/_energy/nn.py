r"""Energy networks: an MLP for vectors and a small convolutional net for 8x8 images, both `AbstractEnergy`s of
$(t, x)$ with $t$ a (level or time) scalar, with optional spectral normalisation (Miyato et al. 2018).

Spectral normalisation here is stateless: each call divides the weight by $\hat\sigma = u^\top W v$ after
`power_iterations` power iterations from a fixed stored vector (the iterates without gradient, $\hat\sigma$ with
gradient, as in Miyato et al.). Under `vmap` over examples the weights are unbatched, so the iteration runs once
per batch. It keeps the energy a plain function of $(t, x)$ (no `eqx.nn.State` threaded through every MCMC step),
at the cost of a few mat-vecs per call.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Conditioning, ScalarLike
from .._misc import as_float
from .._nn import SinusoidalEmbedding
from .energy import AbstractEnergy


def _check_int(cls: str, name: str, value: object, minimum: int = 1) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{cls} needs `{name}` to be an int >= {minimum}; got {name}={value!r}")


def _sigma(w2d: Array, u: Array, iterations: int) -> Array:
    u = jax.lax.stop_gradient(u)
    wn = jax.lax.stop_gradient(w2d)

    def power(_, uv):
        u, _ = uv
        v = wn.T @ u
        v = v / (jnp.linalg.norm(v) + 1e-12)
        u = wn @ v
        return u / (jnp.linalg.norm(u) + 1e-12), v

    # a loop, not unrolled: the compile time no longer grows with `power_iterations` (x4 layers per energy call)
    u, v = jax.lax.fori_loop(0, iterations, power, (u, wn.T @ u))
    return u @ w2d @ v


class _SNLinear(eqx.Module):
    linear: eqx.nn.Linear
    u: Float[Array, " out"] | None
    iterations: int = eqx.field(static=True)

    def __init__(self, n_in: int, n_out: int, spectral: bool, iterations: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.linear = eqx.nn.Linear(n_in, n_out, key=k1)
        self.u = jax.random.normal(k2, (n_out,)) if spectral else None
        self.iterations = iterations

    def __call__(self, x):
        if self.u is None:
            return self.linear(x)
        w = self.linear.weight
        w = w / _sigma(w, self.u.astype(w.dtype), self.iterations)
        return w @ x + self.linear.bias


class _SNConv(eqx.Module):
    conv: eqx.nn.Conv2d
    u: Float[Array, " out"] | None
    iterations: int = eqx.field(static=True)

    def __init__(self, c_in, c_out, kernel, stride, spectral, iterations, *, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, key=k1)
        self.u = jax.random.normal(k2, (c_out,)) if spectral else None
        self.iterations = iterations

    def __call__(self, x):
        conv = self.conv
        if self.u is not None:
            # The usual SN-GAN normalisation of a conv: the kernel reshaped to (c_out, c_in * k * k).
            w = conv.weight
            s = _sigma(w.reshape(w.shape[0], -1), self.u.astype(w.dtype), self.iterations)
            conv = eqx.tree_at(lambda c: c.weight, conv, w / s)
        return conv(x)


class EnergyMLP(AbstractEnergy):
    r"""$E(x, t) = w^\top h_L + b$ with $h_{l+1} = \mathrm{SiLU}(W_l h_l + P_l e(t))$, $e$ a sinusoidal embedding of
    $t$; plus $\tfrac12\lVert x\rVert^2/r^2$ when `confine` $= r$ is set, which keeps $\exp(-E)$ integrable
    whatever the net learns (a SiLU net grows at most linearly).

    **Arguments:** `data_dim`, `width`, `depth` (hidden layers), `embedding_dim`, `spectral_norm` (bool),
    `power_iterations`, `confine` (None or $r > 0$), `key`.
    """

    data_dim: int = eqx.field(static=True)
    embedding: SinusoidalEmbedding
    inp: _SNLinear
    hidden: list[_SNLinear]
    temb: list[eqx.nn.Linear]
    out: _SNLinear
    confine: float | None = eqx.field(static=True)

    def __init__(
        self,
        data_dim: int,
        width: int = 128,
        depth: int = 3,
        embedding_dim: int = 32,
        *,
        spectral_norm: bool = False,
        power_iterations: int = 5,
        confine: float | None = None,
        key: PRNGKeyArray,
    ):
        sizes = (("data_dim", data_dim), ("width", width), ("depth", depth), ("power_iterations", power_iterations))
        for n, v in sizes:
            _check_int("EnergyMLP", n, v)
        if confine is not None and not confine > 0:
            raise ValueError(f"EnergyMLP needs `confine` > 0 or None; got {confine!r}")
        k_in, k_h, k_t, k_out = jax.random.split(key, 4)
        self.data_dim = data_dim
        self.embedding = SinusoidalEmbedding(embedding_dim)
        self.inp = _SNLinear(data_dim, width, spectral_norm, power_iterations, key=k_in)
        self.hidden = [
            _SNLinear(width, width, spectral_norm, power_iterations, key=k) for k in jax.random.split(k_h, depth - 1)
        ]
        self.temb = [eqx.nn.Linear(embedding_dim, width, key=k) for k in jax.random.split(k_t, depth)]
        self.out = _SNLinear(width, 1, spectral_norm, power_iterations, key=k_out)
        self.confine = None if confine is None else float(confine)

    def __call__(
        self, t: ScalarLike, x: Float[Array, " d"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, ""]:
        if x.shape != (self.data_dim,):
            raise ValueError(f"EnergyMLP: `x` must be one example of shape ({self.data_dim},); got {x.shape}")
        if cond is not None:
            raise ValueError(f"EnergyMLP is unconditional; got cond={cond!r}")
        e = self.embedding(as_float(t)).astype(x.dtype)
        h = jax.nn.silu(self.inp(x) + self.temb[0](e))
        for lin, tl in zip(self.hidden, self.temb[1:], strict=True):
            h = jax.nn.silu(lin(h) + tl(e))
        out = self.out(h)[0]
        if self.confine is not None:
            out = out + 0.5 * jnp.sum(x**2) / self.confine**2
        return out


class ConvEnergy(AbstractEnergy):
    r"""A small convolutional energy for `channels` x `size` x `size` images (8x8 digits): three 3x3 convs (the
    last two of stride 2) with the time embedding added per layer, global sum pooling and a linear head; the
    optional `confine` term as in `EnergyMLP`.

    **Arguments:** `channels`, `size`, `width`, `embedding_dim`, `spectral_norm`, `power_iterations`, `confine`,
    `key`.
    """

    channels: int = eqx.field(static=True)
    size: int = eqx.field(static=True)
    embedding: SinusoidalEmbedding
    convs: list[_SNConv]
    temb: list[eqx.nn.Linear]
    head: _SNLinear
    confine: float | None = eqx.field(static=True)

    def __init__(
        self,
        channels: int = 1,
        size: int = 8,
        width: int = 64,
        embedding_dim: int = 32,
        *,
        spectral_norm: bool = False,
        power_iterations: int = 5,
        confine: float | None = None,
        key: PRNGKeyArray,
    ):
        for n, v in (("channels", channels), ("size", size), ("width", width), ("power_iterations", power_iterations)):
            _check_int("ConvEnergy", n, v)
        if confine is not None and not confine > 0:
            raise ValueError(f"ConvEnergy needs `confine` > 0 or None; got {confine!r}")
        ks = jax.random.split(key, 8)
        widths = (channels, width, 2 * width, 2 * width)
        strides = (1, 2, 2)
        self.channels, self.size = channels, size
        self.embedding = SinusoidalEmbedding(embedding_dim)
        self.convs = [
            _SNConv(widths[i], widths[i + 1], 3, strides[i], spectral_norm, power_iterations, key=ks[i])
            for i in range(3)
        ]
        self.temb = [eqx.nn.Linear(embedding_dim, widths[i + 1], key=ks[3 + i]) for i in range(3)]
        self.head = _SNLinear(widths[-1], 1, spectral_norm, power_iterations, key=ks[6])
        self.confine = None if confine is None else float(confine)

    def __call__(
        self,
        t: ScalarLike,
        x: Float[Array, "c h w"],
        cond: Conditioning = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, ""]:
        if x.shape != (self.channels, self.size, self.size):
            raise ValueError(
                f"ConvEnergy: `x` must be one image of shape ({self.channels}, {self.size}, {self.size}); got {x.shape}"
            )
        if cond is not None:
            raise ValueError(f"ConvEnergy is unconditional; got cond={cond!r}")
        e = self.embedding(as_float(t)).astype(x.dtype)
        h = x
        for conv, tl in zip(self.convs, self.temb, strict=True):
            h = jax.nn.silu(conv(h) + tl(e)[:, None, None])
        out = self.head(jnp.sum(h, axis=(1, 2)))[0]
        if self.confine is not None:
            out = out + 0.5 * jnp.sum(x**2) / self.confine**2
        return out
