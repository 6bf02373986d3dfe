"""The compressed file: a checked header, the ANS stream, and a checksum.

Layout: `b"SFBB"`, a little-endian u32 header length, the header (UTF-8 JSON), the stream (little-endian u32
words), and the SHA-256 of everything before it (32 bytes). The bottom of the stream that encoding never reached
is the initial words themselves, which the decoder regenerates from the seed: those `stripped_words` are left out
of the file, so it holds the rate plus only the initial bits actually consumed, not the whole (generous)
allocation. The header records the format version, the codec's settings and model fingerprint
(`AbstractBitsBackCodec.header`), the image count, the jax/jaxlib versions and the platform the stream was written
on, the initial words' seed and count, and the SHA-256 of the original data, which is checked after decoding.
Every mismatch raises a named `BitsBackError`; nothing is returned then.
"""

import hashlib
import json
import struct
from collections.abc import Callable

import constriction
import jax
import jaxlib
import numpy as np

from .base import AbstractBitsBackCodec, BitsBackError, EncodeStats, StreamMismatchError
from .coder import StackExhaustedError, initial_words


MAGIC = b"SFBB"
FORMAT_VERSION = 2  # 2: untouched initial words left out of the file


class CorruptStreamError(BitsBackError):
    """The file is truncated, altered (checksum mismatch) or not a scoreflow bits-back file."""


class ModelMismatchError(BitsBackError):
    """The file was written with another model or other codec settings than the ones given for decoding."""


class PlatformMismatchError(BitsBackError):
    """The file was written with other jax/jaxlib versions or on another platform: the model's float64 numbers
    may differ in the last bit, which would decode garbage, so decoding refuses."""


class DataMismatchError(BitsBackError):
    """Decoding finished but the result's SHA-256 differs from the original data's (recorded in the header)."""


def data_sha256(levels: np.ndarray) -> str:
    """SHA-256 of the shape and the int64 little-endian values of `levels`."""
    a = np.ascontiguousarray(levels, dtype="<i8")
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def environment() -> dict:
    """What must match for bit-identical decoding: jax, jaxlib, constriction, and the backend platform."""
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "constriction": getattr(constriction, "__version__", "unknown"),
        "platform": jax.default_backend(),
    }


def compress_images(
    codec: AbstractBitsBackCodec,
    levels,
    *,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    source: dict | None = None,
) -> tuple[bytes, EncodeStats]:
    """The file's bytes for integer data `levels` of shape `(n, *codec.data_shape)`, and the `EncodeStats`.
    `source` (JSON-able) is stored in the header as is, e.g. how to write the data back."""
    levels = codec.check_levels(levels)
    words, stats = codec.encode(levels, seed=seed, progress=progress)
    first = min(codec.batch_size, levels.shape[0])
    w0 = initial_words(seed, codec.initial_words_per_image() * first)
    m = min(w0.size, words.size - 1)
    differ = np.flatnonzero(words[:m] != w0[:m])
    stripped = int(differ[0]) if differ.size else m  # the bottom words encoding never touched
    words = words[stripped:]
    header = {
        "format_version": FORMAT_VERSION,
        "codec": codec.header(),
        "count": int(levels.shape[0]),
        "data_sha256": data_sha256(levels),
        "seed": int(seed),
        "initial_words": int(w0.size),
        "stripped_words": stripped,
        "num_words": int(words.size),
        "environment": environment(),
        "net_bits": int(stats.net_bits),
        "initial_bits": int(stats.initial_bits),
        "source": source,
    }
    head = json.dumps(header, sort_keys=True).encode()
    body = MAGIC + struct.pack("<I", len(head)) + head + words.astype("<u4").tobytes()
    return body + hashlib.sha256(body).digest(), stats


def read_compressed_header(blob: bytes) -> dict:
    """The header of a file, after checking its magic, lengths and checksum (`CorruptStreamError` otherwise)."""
    return _split(blob)[0]


def _split(blob: bytes) -> tuple[dict, np.ndarray]:
    blob = bytes(blob)
    if len(blob) < len(MAGIC) + 4 + 32 or not blob.startswith(MAGIC):
        raise CorruptStreamError("not a scoreflow bits-back file (no SFBB magic, or shorter than its frame)")
    body, digest = blob[:-32], blob[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptStreamError("checksum mismatch: the file is truncated or altered")
    (n,) = struct.unpack("<I", body[4:8])
    if 8 + n > len(body):
        raise CorruptStreamError(f"header length {n} runs past the end of the file: truncated")
    try:
        header = json.loads(body[8 : 8 + n].decode())
    except ValueError as e:
        raise CorruptStreamError(f"unreadable header: {e}") from None
    payload = body[8 + n :]
    if len(payload) % 4 or len(payload) // 4 != header.get("num_words"):
        raise CorruptStreamError(
            f"the stream holds {len(payload)} bytes; the header says {header.get('num_words')} words: truncated"
        )
    return header, np.frombuffer(payload, dtype="<u4").astype(np.uint32)


def decompress_images(
    codec: AbstractBitsBackCodec, blob: bytes, *, progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """The data `compress` was given, checked: frame and checksum, format version, codec settings and model
    fingerprint, jax/jaxlib/platform, the initial words restored bit for bit, and the data's SHA-256."""
    header, words = _split(blob)
    if header.get("format_version") != FORMAT_VERSION:
        raise CorruptStreamError(
            f"format version {header.get('format_version')!r}; this scoreflow reads {FORMAT_VERSION}"
        )
    mine, theirs = codec.header(), header.get("codec", {})
    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if diff:
        what = ", ".join(f"{k}: file {theirs.get(k)!r} vs given {mine.get(k)!r}" for k in diff)
        raise ModelMismatchError(f"the file was written with another model or settings ({what})")
    env, here = header.get("environment", {}), environment()
    if env != here:
        diff = ", ".join(f"{k}: file {env.get(k)!r} vs here {here[k]!r}" for k in here if env.get(k) != here[k])
        raise PlatformMismatchError(
            f"the file was written under other software or another platform ({diff}); decode it where it was written"
        )
    w0 = initial_words(int(header["seed"]), int(header["initial_words"]))
    stripped = header.get("stripped_words")
    if not isinstance(stripped, int) or not 0 <= stripped <= w0.size:
        raise CorruptStreamError(f"`stripped_words` {stripped!r} is not a count in [0, {w0.size}]")
    words = np.concatenate([w0[:stripped], words])
    try:
        levels, rest = codec.decode(words, int(header["count"]), progress=progress)
    except (StackExhaustedError, StreamMismatchError) as e:
        raise CorruptStreamError(f"the stream does not decode: {e}") from None
    if rest.shape != w0.shape or not np.array_equal(rest, w0):
        raise CorruptStreamError("decoding did not end at the initial words: the stream is corrupted")
    if data_sha256(levels) != header["data_sha256"]:
        raise DataMismatchError("the decoded data's SHA-256 differs from the original's")
    return levels
