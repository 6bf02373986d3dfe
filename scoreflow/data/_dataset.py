"""The dataset record handed from the data edge to training: host arrays, split, and quantisation."""

import dataclasses

import numpy as np


class DataError(ValueError):
    """Bad input data. The message names the file (or data set) and the problem."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    r"""A train/test split of examples of one shape, as host (numpy) float32 arrays.

    Quantised data (images) are stored scaled to $[-1, 1]$: an integer level $k \in \{0, \dots, L-1\}$ becomes
    $x = 2k/(L-1) - 1$, so the bin width is $2/(L-1)$ and bits/dim are exact given `num_levels` $= L$.
    Continuous data (toy mixtures) have `num_levels = None` and are stored as they are.

    **Fields:** `name`, `train` `(n_train, *shape)`, `test` `(n_test, *shape)`, `num_levels` (or None),
    `source` (where the data came from, for error messages and run configs), `density` (an exact density with
    `log_prob`, e.g. a `GaussianMixture`, when one is known; else None), `alphabet` (for character data: the
    string whose i-th character is level i, e.g. text8's `" abc...z"`; else None).
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    num_levels: int | None
    source: str
    density: object | None = None
    alphabet: str | None = None
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None

    def __post_init__(self):
        for split in ("train", "test"):
            a = getattr(self, split)
            if not isinstance(a, np.ndarray) or a.dtype != np.float32:
                raise TypeError(f"Dataset {self.name!r}: `{split}` must be a float32 numpy array; got {type(a)}")
            if a.shape[0] == 0:
                raise DataError(f"Dataset {self.name!r} ({self.source}): the {split} split is empty")
            if not np.all(np.isfinite(a)):
                raise DataError(f"Dataset {self.name!r} ({self.source}): the {split} split contains NaN or inf")
        if self.train.shape[1:] != self.test.shape[1:]:
            raise DataError(
                f"Dataset {self.name!r} ({self.source}): train examples have shape {self.train.shape[1:]} but "
                f"test examples have shape {self.test.shape[1:]}"
            )
        if self.num_levels is not None and self.num_levels < 2:
            raise DataError(f"Dataset {self.name!r}: num_levels must be >= 2 or None; got {self.num_levels}")
        if (self.train_labels is None) != (self.test_labels is None):
            raise DataError(f"Dataset {self.name!r}: labels must be given for both splits or for neither")
        for split in ("train", "test") if self.train_labels is not None else ():
            y = getattr(self, f"{split}_labels")
            n = getattr(self, split).shape[0]
            if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.shape != (n,) or (y < 0).any():
                raise DataError(
                    f"Dataset {self.name!r}: `{split}_labels` must be a non-negative int64 array of shape ({n},); "
                    f"got {getattr(y, 'dtype', type(y))} of shape {getattr(y, 'shape', None)}"
                )
        if self.alphabet is not None and len(self.alphabet) != self.num_levels:
            raise DataError(
                f"Dataset {self.name!r}: an alphabet of {len(self.alphabet)} characters needs num_levels = "
                f"{len(self.alphabet)}; got num_levels={self.num_levels}"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.train.shape[1:])

    @property
    def dim(self) -> int:
        """Number of scalar dimensions of one example (the D of bits/dim)."""
        return int(np.prod(self.shape))

    @property
    def num_classes(self) -> int | None:
        """Number of classes (one more than the largest label) of labelled data; None when unlabelled."""
        if self.train_labels is None:
            return None
        return int(max(self.train_labels.max(), self.test_labels.max())) + 1

    def levels(self, split: str = "test") -> np.ndarray:
        """The integer levels $k = (x + 1)(L - 1)/2$ of a quantised split (int64)."""
        if self.num_levels is None:
            raise ValueError(f"Dataset {self.name!r} is continuous (num_levels=None): it has no integer levels")
        x = getattr(self, split)
        return np.rint((x.astype(np.float64) + 1.0) * 0.5 * (self.num_levels - 1)).astype(np.int64)


def scale_levels(k: np.ndarray, num_levels: int) -> np.ndarray:
    """Integer levels in [0, num_levels - 1] to float32 in [-1, 1]."""
    return (2.0 * k.astype(np.float64) / (num_levels - 1) - 1.0).astype(np.float32)


def split(x: np.ndarray, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed seeded train/test split along the first axis."""
    n = x.shape[0]
    if not 0 < test_size < n:
        raise ValueError(f"`test_size` must lie in (0, {n}) for {n} examples; got test_size={test_size}")
    perm = np.random.default_rng(seed).permutation(n)
    return x[perm[test_size:]], x[perm[:test_size]]
