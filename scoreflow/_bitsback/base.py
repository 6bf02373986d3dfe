"""What every bits-back codec shares: the coding order (a strategy object), the chunk loop over images, the
model fingerprint and the encode statistics."""

import abc
import hashlib
import time
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .coder import AnsStack, initial_words


class BitsBackError(Exception):
    """Base of the codec's named errors: nothing is returned when one is raised."""


class LatentOutOfWindowError(BitsBackError):
    """A latent lies outside the widest coding window of the model's reverse step: the model is far from the
    data (broken or NaN parameters)."""


class StreamMismatchError(BitsBackError):
    """The stream does not decode under this model and codec: another model, other settings, or corruption."""


class AbstractOrder(eqx.Module):
    """Strategy: in which order latents are popped (bits back) and pushed."""


class BBANS(AbstractOrder):
    r"""BB-ANS (Townsend et al., 2019) as in NeuralCompression's bits-back diffusion: pop the whole posterior chain
    $z_T \sim q(z_T \mid x)$, $z_{i-1} \sim q(z_{i-1} \mid z_i, x)$ first, then push $x$ and every latent under the
    model. Needs initial bits that grow linearly with $T$."""


class Interleaved(AbstractOrder):
    r"""Bit-Swap-style interleaving (Kingma et al., 2019): pop $z_0 \sim q(z_0 \mid x)$, push $x$; then for each
    step pop $z_i \sim q(z_i \mid z_{i-1})$ (the forward process) and push $z_{i-1}$ under $p(z_{i-1} \mid z_i)$; push
    $z_T$ under the prior. The same expected rate, with initial bits that do not grow with $T$."""


ORDERS: dict[str, type[AbstractOrder]] = {"bbans": BBANS, "interleaved": Interleaved}


def order_name(order: AbstractOrder) -> str:
    for name, cls in ORDERS.items():
        if type(order) is cls:
            return name
    raise TypeError(f"`order` must be BBANS() or Interleaved(); got {order!r}")


def require_x64() -> None:
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            "bits-back coding evaluates the model in float64 so that encoder and decoder agree bit for bit: call "
            "jax.config.update('jax_enable_x64', True) first"
        )


def to_float64(model):
    """`model` with every floating array leaf cast to float64 (the codec's evaluation precision)."""
    require_x64()
    return jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)


def fingerprint(tree) -> str:
    """SHA-256 over the structure of `tree` (a model), the shapes, dtypes and bytes of its array leaves, the values
    of its number and string leaves and the qualified names of its other leaves (functions): the same in every
    process."""
    h = hashlib.sha256()
    leaves, treedef = jax.tree.flatten(tree)
    h.update(str(treedef).encode())
    for leaf in leaves:
        if eqx.is_array(leaf):
            a = np.asarray(leaf)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        elif isinstance(leaf, (bool, int, float, complex, str, bytes, type(None))):
            h.update(repr(leaf).encode())  # a float field of a network, say
        else:  # functions and other objects: by name, never by `repr` (it holds a memory address)
            h.update(f"{type(leaf).__module__}.{getattr(leaf, '__qualname__', type(leaf).__qualname__)}".encode())
    return h.hexdigest()


class EncodeStats(NamedTuple):
    r"""What one encode measured: the stream grew by `net_bits`; it dipped at most `initial_bits` below its start
    (the initial bits the images needed); `seconds` of wall time. `ideal_bits` is the information content of the
    same symbols under the exact (unquantised, unwindowed) densities: pushes' $-\log_2 p$ minus pops'
    $-\log_2 q$ ($\times\delta$ for grid latents), so `net_bits - ideal_bits` is the coder's own overhead, free of
    the sampling noise that the rate and the bound share."""

    net_bits: int
    initial_bits: int
    seconds: float
    ideal_bits: float


class _Tracker:
    """Follows the stack level during encoding (the lowest point gives the initial bits needed)."""

    def __init__(self, stack: AnsStack):
        self.stack = stack
        self.start = stack.num_bits()
        self.low = self.start

    def __call__(self) -> None:
        self.low = min(self.low, self.stack.num_bits())


class AbstractBitsBackCodec(abc.ABC):
    """A lossless codec for integer arrays of shape `(n, *data_shape)` with values in `[0, num_levels)`.

    Subclasses set `data_shape`, `num_levels`, `order` and `batch_size` (images evaluated together: encoder and
    decoder run the same compiled program on the same shapes, so they agree bit for bit)."""

    data_shape: tuple[int, ...]
    num_levels: int
    order: AbstractOrder
    batch_size: int
    ideal_bits: float = 0.0

    def _ledger(self, log2_prob, pushed: bool) -> None:
        r"""Account a push (cost $-\log_2 p$) or a pop (gain) at the exact probabilities, for `EncodeStats`."""
        total = float(np.sum(log2_prob))
        self.ideal_bits += -total if pushed else total

    @abc.abstractmethod
    def _encode_chunk(self, stack: AnsStack, levels: np.ndarray, track: Callable[[], None]) -> None:
        """Push one chunk of images (after popping its latents)."""

    @abc.abstractmethod
    def _decode_chunk(self, stack: AnsStack, n: int) -> np.ndarray:
        """Pop one chunk of `n` images (and push their latents back)."""

    @abc.abstractmethod
    def header(self) -> dict:
        """The codec's settings and model fingerprint, as written into (and checked against) a file header."""

    @abc.abstractmethod
    def initial_words_per_image(self) -> int:
        """Initial 32-bit words to seed the stack with per image of the first chunk (a safe upper estimate)."""

    def check_levels(self, levels) -> np.ndarray:
        levels = np.asarray(levels)
        if not np.issubdtype(levels.dtype, np.integer):
            raise TypeError(f"`levels` must be an integer array (the data's levels); got dtype {levels.dtype}")
        if levels.ndim != len(self.data_shape) + 1 or levels.shape[1:] != tuple(self.data_shape):
            raise ValueError(
                f"`levels` must have shape (n, {', '.join(map(str, self.data_shape))}) for this model; "
                f"got {levels.shape}"
            )
        if levels.shape[0] < 1:
            raise ValueError("`levels` must hold at least one image; got 0")
        lo, hi = int(levels.min()), int(levels.max())
        if lo < 0 or hi >= self.num_levels:
            raise ValueError(
                f"`levels` must lie in [0, {self.num_levels - 1}] (the model's {self.num_levels} levels); "
                f"got values in [{lo}, {hi}]"
            )
        return levels.astype(np.int64)

    def chunks(self, n: int) -> list[tuple[int, int]]:
        return [(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size)]

    def encode(
        self, levels, *, seed: int = 0, progress: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, EncodeStats]:
        """Words of the stream coding `levels`, and its `EncodeStats`. The stack starts from
        `initial_words(seed, first chunk's images * initial_words_per_image())`."""
        levels = self.check_levels(levels)
        spans = self.chunks(levels.shape[0])
        w0 = initial_words(seed, self.initial_words_per_image() * (spans[0][1] - spans[0][0]))
        stack = AnsStack(w0)
        self.ideal_bits = 0.0
        track = _Tracker(stack)
        start = time.perf_counter()
        for lo, hi in spans:
            self._encode_chunk(stack, levels[lo:hi], track)
            if progress is not None:
                progress(hi - lo)
        seconds = time.perf_counter() - start
        stats = EncodeStats(stack.num_bits() - track.start, track.start - track.low, seconds, float(self.ideal_bits))
        return stack.words(), stats

    def decode(
        self, words: np.ndarray, count: int, *, progress: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(levels of shape `(count, *data_shape)`, the words left on the stack: the initial words if intact)."""
        stack = AnsStack(words)
        out = np.zeros((count, *self.data_shape), np.int64)
        for lo, hi in reversed(self.chunks(count)):
            out[lo:hi] = self._decode_chunk(stack, hi - lo)
            if progress is not None:
                progress(hi - lo)
        return out, stack.words()
