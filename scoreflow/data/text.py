"""Character-level text in the text8 alphabet (space and a-z, 27 levels) as fixed-length sequences.

Two corpora: the Python reference manual's help topics (`scoreflow.pydoc_corpus`, ships with CPython, no
download) and text8 (Mahoney, 2011) from a local file. Held-out text is the end of the corpus, never shuffled
into training: for text8 the standard split (first 90M characters train, last 5M test; Austin et al., 2021).
"""

import os

import numpy as np

from .._discrete.text import TEXT8_ALPHABET, load_text8, pydoc_corpus, text8_encode, text_chunks
from ._dataset import DataError, Dataset, scale_levels


def _check_seq_len(seq_len: int) -> None:
    if not (isinstance(seq_len, int) and seq_len >= 1):
        raise ValueError(f"`seq_len` must be an int >= 1; got seq_len={seq_len!r}")


def _dataset(name: str, source: str, train_ids: np.ndarray, test_ids: np.ndarray, seq_len: int) -> Dataset:
    L = len(TEXT8_ALPHABET)
    parts = {}
    for split, ids in (("train", train_ids), ("test", test_ids)):
        if len(ids) < seq_len:
            raise DataError(f"{source}: the {split} text has {len(ids)} characters, fewer than seq_len={seq_len}")
        parts[split] = scale_levels(text_chunks(ids, seq_len), L)
    return Dataset(name, parts["train"], parts["test"], L, source, alphabet=TEXT8_ALPHABET)


def load_text(seq_len: int = 64, test_fraction: float = 0.1) -> Dataset:
    """The pydoc corpus (about 376 000 characters) as non-overlapping sequences of `seq_len` characters.

    The last `test_fraction` of the characters is the test text, the rest the training text (a fixed split).
    """
    _check_seq_len(seq_len)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must lie in (0, 1); got test_fraction={test_fraction!r}")
    ids = text8_encode(pydoc_corpus())
    cut = int(round(len(ids) * (1.0 - test_fraction)))
    return _dataset("text", "scoreflow.pydoc_corpus (pydoc_data.topics)", ids[:cut], ids[cut:], seq_len)


def load_text8_dataset(path: str | os.PathLike, seq_len: int = 64) -> Dataset:
    """text8 from a local file as sequences of `seq_len` characters: characters [0, 90M) train, [95M, 100M)
    test (the standard split; the middle 5M, the validation text, are left out). Shorter files (e.g. a prefix
    for quick runs) are split 90% / 10% in the same order."""
    _check_seq_len(seq_len)
    try:
        ids = text8_encode(load_text8(path))
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from None
    n = len(ids)
    if n >= 100_000_000:
        train, test = ids[:90_000_000], ids[95_000_000:100_000_000]
    else:
        cut = int(round(0.9 * n))
        train, test = ids[:cut], ids[cut:]
    return _dataset("text8", os.fspath(path), train, test, seq_len)
