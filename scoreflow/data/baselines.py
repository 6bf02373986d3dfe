"""What a bits/dim number means: simple baselines on the same quantised test set."""

import io
import lzma

import numpy as np

from ._dataset import Dataset


def categorical_bits_per_dim(dataset: Dataset) -> float:
    r"""Test bits/dim of independent per-pixel categorical distributions fitted on the training set.

    $p_d(k) = (n_d(k) + 1)/(N + L)$ (add-one / Laplace smoothing over $L$ levels, $N$ training examples),
    evaluated as $-\frac{1}{D}\,\mathrm{mean}_x \sum_d \log_2 p_d(x_d)$ on the test set.
    """
    L = dataset.num_levels
    train = dataset.levels("train").reshape(len(dataset.train), -1)
    test = dataset.levels("test").reshape(len(dataset.test), -1)
    d = train.shape[1]
    counts = np.zeros((d, L))
    np.add.at(counts, (np.broadcast_to(np.arange(d), train.shape), train), 1.0)
    logp = np.log2(counts + 1.0) - np.log2(train.shape[0] + L)
    return float(-np.mean(logp[np.arange(d)[None, :], test]))


def _png_bytes(k: np.ndarray) -> bytes:
    from PIL import Image

    # All test images side by side in one greyscale strip per channel: the PNG overhead is paid once.
    n, c = k.shape[0], k.shape[1] if k.ndim == 4 else 1
    strip = k.reshape(n * c, *k.shape[-2:]) if k.ndim == 4 else k.reshape(n, 1, -1)
    strip = np.concatenate(list(strip), axis=0)
    dtype, mode = (np.uint8, "L") if k.max() < 256 else (np.uint16, "I;16")
    buf = io.BytesIO()
    Image.fromarray(strip.astype(dtype), mode=mode).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _raw_bytes(k: np.ndarray) -> bytes:
    return k.astype(np.uint8 if k.max() < 256 else np.uint16).tobytes()


def compressor_bits_per_dim(dataset: Dataset) -> dict[str, float]:
    """Test bits/dim of general-purpose lossless compressors on the whole test set as one stream.

    PNG (Pillow, one image strip), xz (`lzma`, preset 9 extreme) on the raw level bytes, and zstd (level 22)
    when the `zstandard` package is installed. Headers are included: this is what a file would cost.
    """
    k = dataset.levels("test")
    n_dims = k.size
    out = {
        "png": 8.0 * len(_png_bytes(k)) / n_dims,
        "xz": 8.0 * len(lzma.compress(_raw_bytes(k), preset=9 | lzma.PRESET_EXTREME)) / n_dims,
    }
    try:
        import zstandard
    except ImportError:
        pass
    else:
        out["zstd"] = 8.0 * len(zstandard.ZstdCompressor(level=22).compress(_raw_bytes(k))) / n_dims
    return out


def baselines(dataset: Dataset) -> dict[str, float]:
    """All baselines of a quantised data set, in bits/dim: `categorical` and each compressor."""
    if dataset.num_levels is None:
        raise ValueError(f"baselines need quantised data; dataset {dataset.name!r} is continuous")
    return {"categorical": categorical_bits_per_dim(dataset), **compressor_bits_per_dim(dataset)}
