"""The built-in data set: scikit-learn's 8x8 handwritten digits (ships with scikit-learn, no download)."""

import numpy as np

from ._dataset import Dataset, scale_levels, split


DIGITS_LEVELS = 17  # pixel values are integers 0..16


def _digit_levels() -> np.ndarray:
    from sklearn.datasets import load_digits as _load

    images = _load().images  # (1797, 8, 8) float64, integer valued
    k = np.rint(images).astype(np.int64)
    if not (np.array_equal(k, images) and k.min() >= 0 and k.max() <= DIGITS_LEVELS - 1):
        raise RuntimeError("scikit-learn's digits are no longer integers in 0..16; scoreflow must be updated")
    return k[:, None, :, :]


def _digit_labels(test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The class (0..9) of each digit, split exactly as the images are (the permutation depends on n and seed)."""
    from sklearn.datasets import load_digits as _load

    return split(_load().target.astype(np.int64), test_size, seed)


def load_digits(test_size: int = 297, seed: int = 0) -> Dataset:
    """The 1797 8x8 digits as `(n, 1, 8, 8)` images with 17 grey levels, scaled to [-1, 1].

    The split is fixed by `seed` (default: 1500 train / 297 test); `train_labels`/`test_labels` hold each image's
    digit 0..9. Data: Alpaydin & Kaynak (1998), UCI "Optical Recognition of Handwritten Digits", as shipped by
    `sklearn.datasets.load_digits`.
    """
    x = scale_levels(_digit_levels(), DIGITS_LEVELS)
    train, test = split(x, test_size, seed)
    y_train, y_test = _digit_labels(test_size, seed)
    return Dataset(
        "digits", train, test, DIGITS_LEVELS, "sklearn.datasets.load_digits", train_labels=y_train, test_labels=y_test
    )


def load_binary_digits(test_size: int = 297, seed: int = 0, threshold: int = 8) -> Dataset:
    """The digits of `load_digits` binarised: level 1 where the grey level is `>= threshold` (of 0..16), else 0.

    Same images and the same split as `load_digits(test_size, seed)`; 2 levels, scaled to {-1, 1}.
    """
    if not (isinstance(threshold, int) and 1 <= threshold <= DIGITS_LEVELS - 1):
        raise ValueError(f"`threshold` must be an int in [1, {DIGITS_LEVELS - 1}]; got threshold={threshold!r}")
    x = scale_levels((_digit_levels() >= threshold).astype(np.int64), 2)
    train, test = split(x, test_size, seed)
    y_train, y_test = _digit_labels(test_size, seed)
    return Dataset(
        "digits-binary",
        train,
        test,
        2,
        f"sklearn.datasets.load_digits, grey level >= {threshold}",
        train_labels=y_train,
        test_labels=y_test,
    )
