r"""Embeddings of the scalar noise level $c_{noise}$ (and of class labels) as vectors.

The score-model adapters pass $c_{noise} = -\lambda/8$ ($\lambda$ the log-SNR), which lies in
roughly $[-3, 3]$ for every SDE in scoreflow; EDM feeds its networks the same quantity
($\tfrac14\log\sigma$).
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._custom_types import ScalarLike
from .._misc import as_float


def _check_dim(dim: int, cls: str) -> None:
    if not (isinstance(dim, int) and dim >= 2 and dim % 2 == 0):
        raise ValueError(
            f"{cls} needs an even `dim` >= 2 (half sines, half cosines); got dim={dim!r}"
        )


class AbstractEmbedding(eqx.Module):
    """Strategy: maps a scalar noise level $c_{noise}$ to a vector of size `dim`."""

    dim: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(self, c_noise: ScalarLike) -> Float[Array, " dim"]:
        """The embedding of one scalar."""


class SinusoidalEmbedding(AbstractEmbedding):
    r"""Transformer positional encoding of a scalar (Vaswani et al., 2017; DDPM, Ho et al., 2020).

    With $h = \mathrm{dim}/2$, $P$ = `max_period` and frequencies $\omega_i = P^{-i/h}$,
    $i = 0, \dots, h-1$: $e(c) = [\sin(c\,\omega_0), \dots, \sin(c\,\omega_{h-1}),
    \cos(c\,\omega_0), \dots, \cos(c\,\omega_{h-1})]$.
    """

    dim: int = eqx.field(static=True)
    max_period: float = eqx.field(static=True)

    def __init__(self, dim: int, max_period: float = 10_000.0):
        r"""**Arguments:** `dim` (even output size), `max_period` ($P > 1$; the longest wavelength
        is $2\pi P$)."""
        _check_dim(dim, "SinusoidalEmbedding")
        if not max_period > 1:
            raise ValueError(
                f"SinusoidalEmbedding needs `max_period` > 1; got max_period={max_period!r}"
            )
        self.dim = dim
        self.max_period = float(max_period)

    def __call__(self, c_noise: ScalarLike) -> Float[Array, " dim"]:
        c = as_float(c_noise)
        half = self.dim // 2
        freqs = jnp.exp(-math.log(self.max_period) * jnp.arange(half, dtype=c.dtype) / half)
        arg = c * freqs
        return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)])


class FourierEmbedding(AbstractEmbedding):
    r"""Random Fourier features of a scalar (Tancik et al., 2020; NCSN++ in Song et al., 2021).

    $e(c) = [\sin(2\pi c\,w), \cos(2\pi c\,w)]$ with $w \sim N(0, s^2 I_{\mathrm{dim}/2})$ drawn
    once at construction ($s$ = `scale`) and held fixed (`stop_gradient`: training does not move
    it).
    """

    dim: int = eqx.field(static=True)
    weights: Float[Array, " half"]

    def __init__(self, dim: int, scale: float = 16.0, *, key: PRNGKeyArray):
        """**Arguments:** `dim` (even output size), `scale` (std of the frequencies, > 0), `key`."""
        _check_dim(dim, "FourierEmbedding")
        if not scale > 0:
            raise ValueError(f"FourierEmbedding needs `scale` > 0; got scale={scale!r}")
        self.dim = dim
        self.weights = scale * jax.random.normal(key, (dim // 2,))

    def __call__(self, c_noise: ScalarLike) -> Float[Array, " dim"]:
        c = as_float(c_noise)
        arg = 2 * math.pi * c * jax.lax.stop_gradient(self.weights).astype(c.dtype)
        return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)])


class LabelEmbedding(eqx.Module):
    """A learned vector per class label, plus one for the null label `num_classes` (classifier-free
    guidance, Ho & Salimans, 2022); `cond=None` means the null label. Labels are checked to lie in
    `[0, num_classes]` (through `eqx.error_if`, so also under `jit`)."""

    num_classes: int = eqx.field(static=True)
    table: eqx.nn.Embedding

    def __init__(self, num_classes: int, dim: int, *, key: PRNGKeyArray):
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(
                f"`num_classes` must be None or an int >= 1; got num_classes={num_classes!r}"
            )
        self.num_classes = num_classes
        self.table = eqx.nn.Embedding(num_classes + 1, dim, key=key)

    def __call__(self, cond: Int[ArrayLike, ""] | None) -> Float[Array, " dim"]:
        label = jnp.asarray(self.num_classes if cond is None else cond)
        if label.shape != () or not jnp.issubdtype(label.dtype, jnp.integer):
            raise ValueError(
                "`cond` must be None or one integer class label;"
                f" got dtype {label.dtype}, shape {label.shape}"
            )
        label = eqx.error_if(
            label,
            (label < 0) | (label > self.num_classes),
            f"`cond` must be a class label in [0, {self.num_classes}]"
            f" ({self.num_classes} = null label)",
        )
        return self.table(label)


def check_unconditional(cond: object) -> None:
    """Networks built without `num_classes` take no conditioning: passing one is an error, since
    silently ignoring it would hide a mistake."""
    if cond is not None:
        raise ValueError(
            "`cond` was given but the network was built with num_classes=None (unconditional)"
        )
