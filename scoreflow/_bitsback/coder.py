r"""The one door to the entropy coder: `constriction`'s ANS stack (Bamler, 2022), guarded.

Nothing unchecked reaches the Rust coder: means and standard deviations are checked to be finite (and the
standard deviations positive) before the call, since constriction accepts a NaN mean silently and raises a
`BaseException`-derived panic on a zero standard deviation; symbols are range-checked and cast to its `int32`;
probabilities are checked to be finite and non-negative with a positive sum. The stack starts from *initial
words* (random, from a seed): popping from an empty ANS stack silently yields the minimum symbol instead of a
sample (measured: 24 bits per symbol instead of 6.6 on the later push), so bits-back coding needs something to
pop. After decoding, `remaining_words` must equal those initial words bit for bit.

Quantised Gaussians are coded in *window coordinates*: a symbol $k$ of a window $[lo, lo + n)$ is sent as
$k - lo \in [0, n)$ with the mean shifted by $-lo$, so one constriction model family (with its fixed range
$[0, n - 1]$) serves every variable of a call, each with its own window.
"""

import constriction
import numpy as np


class CoderError(ValueError):
    """A value that must never reach the entropy coder (NaN or infinite parameters, a symbol outside its range)."""


class StackExhaustedError(RuntimeError):
    """A pop met an empty stack: the stream ended early (a truncated file) or was never a stream."""


def _check_counts(what: str, n: int, *arrays: tuple[str, np.ndarray]) -> None:
    for name, a in arrays:
        if a.ndim != 1 or a.shape[0] != n:
            raise CoderError(f"{what}: `{name}` must be a 1-D array of length {n}; got shape {a.shape}")


def _gaussian_params(what: str, means, stds, n: int | None, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    means = np.ascontiguousarray(means, dtype=np.float64).reshape(-1)
    stds = np.ascontiguousarray(stds, dtype=np.float64).reshape(-1)
    _check_counts(what, means.shape[0] if n is None else n, ("means", means), ("stds", stds))
    if not np.all(np.isfinite(means)):
        bad = means[~np.isfinite(means)][0]
        raise CoderError(f"{what}: `means` must be finite; got {bad} (NaN or infinite model parameters?)")
    if not np.all(np.isfinite(stds) & (stds > 0)):
        bad = stds[~(np.isfinite(stds) & (stds > 0))][0]
        raise CoderError(f"{what}: `stds` must be finite and > 0; got {bad}")
    if not (isinstance(num_bins, (int, np.integer)) and 2 <= num_bins < 2**31):
        raise CoderError(f"{what}: `num_bins` must be an int in [2, 2**31); got {num_bins!r}")
    return means, stds


def _probabilities(what: str, probs, n: int | None) -> np.ndarray:
    probs = np.ascontiguousarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2 or (n is not None and probs.shape[0] != n):
        raise CoderError(f"{what}: `probs` must have shape (n, num_symbols >= 2); got {probs.shape}")
    if not np.all(np.isfinite(probs) & (probs >= 0)):
        raise CoderError(f"{what}: `probs` must be finite and >= 0 (NaN model parameters?)")
    if not np.all(probs.sum(axis=1) > 0):
        raise CoderError(f"{what}: every row of `probs` must have a positive sum")
    return probs


def _symbols(what: str, symbols, upper: int) -> np.ndarray:
    s = np.asarray(symbols).reshape(-1)
    if not np.issubdtype(s.dtype, np.integer):
        raise CoderError(f"{what}: `symbols` must be integers; got dtype {s.dtype}")
    if s.size and (s.min() < 0 or s.max() >= upper):
        raise CoderError(f"{what}: `symbols` must lie in [0, {upper}); got values in [{s.min()}, {s.max()}]")
    return s.astype(np.int32)


def initial_words(seed: int, num_words: int) -> np.ndarray:
    """`num_words` uniformly random 32-bit words from `seed` (numpy's PCG64): the bottom of every stream.

    The last word is made non-zero, since an ANS stack's top word may not be zero."""
    if num_words < 1:
        raise ValueError(f"`num_words` must be >= 1; got {num_words}")
    w = np.random.Generator(np.random.PCG64(seed)).integers(0, 2**32, size=num_words, dtype=np.uint64)
    w = w.astype(np.uint32)
    w[-1] |= np.uint32(1)
    return w


class AnsStack:
    """An ANS stack over 32-bit words. `push_*` adds symbols, `pop_*` removes them (last in, first out).

    Arrays are pushed so that the matching `pop_*` call returns them in the same order.
    """

    def __init__(self, words: np.ndarray):
        words = np.asarray(words)
        if words.dtype != np.uint32 or words.ndim != 1 or words.size == 0:
            raise CoderError(f"`words` must be a non-empty 1-D uint32 array; got {words.dtype} {words.shape}")
        if words[-1] == 0:
            raise StackExhaustedError("the stream's top word is zero: not an ANS stream (corrupted?)")
        self._coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words))
        self._families: dict[tuple[str, int], object] = {}

    def _gaussian(self, num_bins: int):
        key = ("gaussian", int(num_bins))
        if key not in self._families:
            self._families[key] = constriction.stream.model.QuantizedGaussian(0, int(num_bins) - 1)
        return self._families[key]

    def _categorical(self):
        key = ("categorical", 0)
        if key not in self._families:
            self._families[key] = constriction.stream.model.Categorical(perfect=False)
        return self._families[key]

    def num_bits(self) -> int:
        """Bits on the stack (the compressed size if it ended now)."""
        return int(self._coder.num_valid_bits())

    def words(self) -> np.ndarray:
        """The stack as 32-bit words (a copy)."""
        return np.array(self._coder.get_compressed(), dtype=np.uint32)

    def push_gaussian(self, symbols, means, stds, num_bins: int) -> None:
        r"""Push `symbols` in $[0, n)$ under Gaussians of `means`, `stds` (window coordinates) quantised to the
        $n$ = `num_bins` unit bins and renormalised (constriction's leaky quantiser: every bin gets mass
        $\ge 2^{-24}$)."""
        s = _symbols("push_gaussian", symbols, num_bins)
        means, stds = _gaussian_params("push_gaussian", means, stds, s.shape[0], num_bins)
        if s.size:
            self._coder.encode_reverse(s, self._gaussian(num_bins), means, stds)

    def pop_gaussian(self, means, stds, num_bins: int) -> np.ndarray:
        """Pop one symbol in [0, num_bins) per mean (the inverse of `push_gaussian`)."""
        means, stds = _gaussian_params("pop_gaussian", means, stds, None, num_bins)
        if not means.size:
            return np.zeros(0, np.int64)
        self._check_not_empty("pop_gaussian")
        return np.asarray(self._coder.decode(self._gaussian(num_bins), means, stds), dtype=np.int64)

    def push_categorical(self, symbols, probs) -> None:
        """Push `symbols[i]` under the categorical `probs[i]` (rows normalised by the coder)."""
        probs = _probabilities("push_categorical", probs, None)
        s = _symbols("push_categorical", symbols, probs.shape[1])
        if s.shape[0] != probs.shape[0]:
            raise CoderError(f"push_categorical: {s.shape[0]} symbols but {probs.shape[0]} rows of `probs`")
        if s.size:
            self._coder.encode_reverse(s, self._categorical(), probs)

    def pop_categorical(self, probs) -> np.ndarray:
        """Pop one symbol per row of `probs` (the inverse of `push_categorical`)."""
        probs = _probabilities("pop_categorical", probs, None)
        if not probs.shape[0]:
            return np.zeros(0, np.int64)
        self._check_not_empty("pop_categorical")
        return np.asarray(self._coder.decode(self._categorical(), probs), dtype=np.int64)

    def _check_not_empty(self, what: str) -> None:
        if self._coder.is_empty():
            raise StackExhaustedError(f"{what}: the stream is exhausted (truncated or not a scoreflow stream)")
