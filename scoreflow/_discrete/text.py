"""Character-level text in the text8 alphabet (27 symbols: space and a-z): a corpus that ships with Python, a
text8 loader, and encode/decode. Host-side numpy only."""

import re
from pathlib import Path

import numpy as np


TEXT8_ALPHABET = " abcdefghijklmnopqrstuvwxyz"


def normalise_text8(text: str) -> str:
    """Lower-case, map every character outside a-z to a space, and collapse runs of spaces (text8's alphabet)."""
    return re.sub(" +", " ", re.sub("[^a-z]", " ", text.lower())).strip()


def pydoc_corpus() -> str:
    """About 376 000 characters of English (Python 3.11): the help topics of the Python reference manual, from the
    standard library module `pydoc_data.topics` (ships with CPython; no download), normalised to the text8 alphabet."""
    from pydoc_data.topics import topics

    return normalise_text8(" ".join(topics[k] for k in sorted(topics)))


def load_text8(path: str | Path) -> str:
    """The text8 corpus (Mahoney, 2011: the first 10^8 characters of cleaned English Wikipedia) from a local file,
    e.g. unzipped from http://mattmahoney.net/dc/text8.zip. Raises FileNotFoundError naming `path` if missing."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text8 file not found at path={str(p)!r}; download and unzip "
                                "http://mattmahoney.net/dc/text8.zip and pass the path of the `text8` file")
    text = p.read_text(encoding="ascii")
    bad = set(text) - set(TEXT8_ALPHABET)
    if bad:
        raise ValueError(f"{str(p)!r} is not text8: it contains characters outside ' a-z': {sorted(bad)[:10]}")
    return text


def text8_encode(text: str) -> np.ndarray:
    """Characters of the text8 alphabet to int32 indices in [0, 27) (space = 0)."""
    table = np.full(128, -1, np.int32)
    table[np.frombuffer(TEXT8_ALPHABET.encode("ascii"), np.uint8)] = np.arange(len(TEXT8_ALPHABET), dtype=np.int32)
    codes = np.frombuffer(text.encode("ascii", errors="replace"), np.uint8)
    ids = table[np.minimum(codes, 127)]
    if np.any(ids < 0):
        raise ValueError(f"`text` has characters outside the text8 alphabet {TEXT8_ALPHABET!r}; "
                         "apply normalise_text8 first")
    return ids


def text8_decode(ids: np.ndarray) -> str:
    """Indices in [0, 27) back to a string."""
    return "".join(TEXT8_ALPHABET[i] for i in np.asarray(ids).reshape(-1))


def text_chunks(ids: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping sequences of `length` tokens, shape (len(ids) // length, length); the tail is dropped."""
    if not (isinstance(length, int) and 1 <= length <= len(ids)):
        raise ValueError(f"`length` must be an int in [1, {len(ids)}]; got length={length!r}")
    n = len(ids) // length
    return np.asarray(ids[: n * length]).reshape(n, length)
