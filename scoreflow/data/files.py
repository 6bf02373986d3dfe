"""The user's own data: `.npy` / `.npz` arrays or a folder of PNG images, with a declared bit depth."""

import os
import zipfile

import numpy as np

from ._dataset import DataError, Dataset, scale_levels, split


def _check_bits(bits: int) -> int:
    if not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"`bits` (bit depth of the data) must be an integer in [1, 16]; got bits={bits!r}")
    return bits


def _to_levels(a: np.ndarray, bits: int, where: str) -> np.ndarray:
    """Validate integer levels in [0, 2**bits - 1] and return them as int64."""
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(f"{where}: expected a numeric array, got dtype {a.dtype} (ragged or non-numeric data?)")
    if a.size == 0:
        raise DataError(f"{where}: the array is empty (shape {a.shape})")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise DataError(f"{where}: contains {int(np.sum(~np.isfinite(a)))} NaN or inf values")
        if not np.array_equal(a, np.rint(a)):
            raise DataError(
                f"{where}: values must be integer levels for the declared bit depth {bits}; found non-integers "
                f"(e.g. {a[a != np.rint(a)].flat[0]!r})"
            )
    lo, hi, top = a.min(), a.max(), 2**bits - 1
    if lo < 0 or hi > top:
        raise DataError(f"{where}: values lie in [{lo}, {hi}], outside [0, {top}] for the declared bit depth {bits}")
    return a.astype(np.int64)


def _as_examples(a: np.ndarray, where: str) -> np.ndarray:
    """(n, d) vectors stay; (n, H, W) gains a channel axis; (n, H, W, C) with C in {1, 3, 4} becomes (n, C, H, W)."""
    if a.ndim < 2:
        raise DataError(f"{where}: expected an array of examples of shape (n, ...); got shape {a.shape}")
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 4 and a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
        return np.moveaxis(a, -1, 1)
    return a


def load_array_file(path: str | os.PathLike, bits: int = 8, test_size: int | None = None, seed: int = 0) -> Dataset:
    """Load integer-valued data of bit depth `bits` from a `.npy` or `.npz` file.

    A `.npz` with arrays `train` and `test` gives the split; otherwise the file's single array (or its `x`)
    is split with a fixed `seed`, `test_size` examples (default 10%) going to the test set. Images are
    `(n, C, H, W)`, `(n, H, W)` or `(n, H, W, C)`; vectors `(n, d)`. Values must be integers in
    `[0, 2**bits - 1]`; they are scaled to [-1, 1] with `2**bits` levels.
    """
    bits = _check_bits(bits)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{path}: cannot be read as a numeric array ({e}); ragged data are not supported") from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy/.npz file ({e})") from e
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            try:
                if "train" in keys and "test" in keys:
                    parts = {"train": loaded["train"], "test": loaded["test"]}
                elif len(keys) == 1 or "x" in keys:
                    parts = {"all": loaded["x" if "x" in keys else keys[0]]}
                else:
                    raise DataError(f"{path}: expected arrays 'train' and 'test', or a single array; found {keys}")
            except ValueError as e:
                if isinstance(e, DataError):
                    raise
                raise DataError(
                    f"{path}: an array cannot be read as numeric ({e}); ragged data are not supported"
                ) from e
    else:
        parts = {"all": loaded}
    levels = {k: _as_examples(_to_levels(v, bits, f"{path} [{k}]"), f"{path} [{k}]") for k, v in parts.items()}
    if "all" in levels:
        k = levels["all"]
        n = k.shape[0]
        if n < 2:
            raise DataError(f"{path}: needs at least 2 examples to split into train and test; got {n}")
        ts = max(1, n // 10) if test_size is None else test_size
        train, test = split(k, ts, seed)
    else:
        train, test = levels["train"], levels["test"]
        if train.shape[1:] != test.shape[1:]:
            raise DataError(
                f"{path}: train examples have shape {train.shape[1:]} but test examples have shape {test.shape[1:]}"
            )
    num_levels = 2**bits
    name = os.path.splitext(os.path.basename(path))[0]
    return Dataset(name, scale_levels(train, num_levels), scale_levels(test, num_levels), num_levels, path)


def _read_png(path: str, bits: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode == "P":
                raise DataError(f"{path}: palette PNG (mode 'P') is not supported; save it as greyscale or RGB")
            a = np.array(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable PNG image ({e})") from e
    if a.dtype == bool:
        a = a.astype(np.uint8)
    a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)  # (C, H, W)
    return _to_levels(a, bits, path)


def load_png_folder(folder: str | os.PathLike, bits: int = 8, test_size: int | None = None, seed: int = 0) -> Dataset:
    """Load every `*.png` in `folder` (sorted by name) as `(C, H, W)` images of bit depth `bits`.

    All images must have the same size and number of channels; values must fit `bits` (e.g. 8 for ordinary
    PNGs, 16 for 16-bit greyscale). A fixed `seed` sends `test_size` images (default 10%) to the test set.
    """
    bits = _check_bits(bits)
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".png"))
    if not names:
        raise DataError(f"{folder}: the folder contains no .png files")
    images, first = [], None
    for n in names:
        p = os.path.join(folder, n)
        a = _read_png(p, bits)
        if first is None:
            first = (p, a.shape)
        elif a.shape != first[1]:
            raise DataError(
                f"{p}: image of shape (C, H, W) = {a.shape} differs from {first[0]} of shape {first[1]}; "
                "all images must have the same size and channels"
            )
        images.append(a)
    k = np.stack(images)
    if k.shape[0] < 2:
        raise DataError(f"{folder}: needs at least 2 images to split into train and test; found {k.shape[0]}")
    ts = max(1, k.shape[0] // 10) if test_size is None else test_size
    train, test = split(k, ts, seed)
    num_levels = 2**bits
    return Dataset(
        os.path.basename(os.path.normpath(folder)),
        scale_levels(train, num_levels),
        scale_levels(test, num_levels),
        num_levels,
        folder,
    )
