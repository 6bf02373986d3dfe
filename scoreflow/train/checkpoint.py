"""Checkpoints that lose nothing: atomic writes, a self-describing header, and a SHA-256 over everything.

File layout (all integers little-endian):

    b"SCOREFLW"  | u32 format version | u64 header length | header (UTF-8 JSON)
    | 32-byte SHA-256 of the header | payload (every array leaf's raw bytes, in header order)

The header lists, for every array leaf, its path (`jax.tree_util.keystr`), shape, dtype, byte offset and
size, plus the payload's length and SHA-256 and free-form JSON `metadata`. Loading checks all of it against
the file and against a template pytree of the expected structure, so a truncated file, a flipped byte, an
extra or missing leaf, a shape or dtype change or an unknown version is refused with an error naming the file.
(`eqx.tree_deserialise_leaves` alone accepts extra trailing leaves and flipped bytes and is not atomic.)

Temporary files and what cleans them: a save writes `.<name>.<host>.<pid>.<random>.tmp` next to the target and
renames it. A writer killed outright (SIGKILL, power loss) leaves that file behind. `clean_temporaries` removes
a temporary when its writer is known to be dead: written on this host by a process id that no longer runs. A
temporary it cannot check (written on another host, or named without host and pid by an older scoreflow) is
removed only if it was last modified before a given time (the start of the run that cleans), since a live
writer keeps modifying its file. A live writer's file is never removed. `save_state` cleans the folder on every
save; the CLI cleans at the start of a run.

Read-only files are protected: a save onto a read-only checkpoint, or into a read-only folder, is refused with
a `CheckpointError` instead of silently replacing it (`os.replace` alone would replace a read-only file).
"""

import hashlib
import json
import os
import re
import secrets
import socket
import struct
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree


MAGIC = b"SCOREFLW"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIQ")  # magic, version, header length


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted or does not match what was expected."""


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _leaves(tree: PyTree) -> list[tuple[str, Any]]:
    """(path, array) for every array leaf; typed PRNG keys included."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_key)
    return [(jax.tree_util.keystr(p), x) for p, x in flat if eqx.is_array(x) or isinstance(x, np.ndarray)]


def _host(x) -> tuple[np.ndarray, str]:
    """Host copy of a leaf and the dtype name to record (typed keys as 'key<impl>' over their raw data)."""
    if _is_key(x):
        return np.asarray(jax.random.key_data(x)), str(x.dtype)
    return np.asarray(x), np.asarray(x).dtype.str


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


_TMP = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{16}\.tmp$")
_LEGACY_TMP = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{16}\.tmp$")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _read_only(path: str) -> bool:
    """Whether `path` is marked read-only: no write permission bits, or not writable by this process. (The bits
    are checked too because root may write anything: a file made read-only is meant to be left alone.)"""
    return not (os.stat(path).st_mode & 0o222) or not os.access(path, os.W_OK)


def clean_temporaries(folder: str | os.PathLike, *, before: float | None = None) -> list[str]:
    """Remove the temporary files that killed saves left in `folder`; returns the paths removed.

    Removed: a temporary written on this host by a process that no longer runs; and, if `before` (a
    `time.time()` value) is given, a temporary whose writer cannot be checked (another host, or an older
    scoreflow's name without host and pid) that was last modified before `before`. Never a live writer's.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return []
    host, removed = _host_tag(), []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        m = _TMP.match(name)
        if m and m.group("host") == host:
            stale = not _running(int(m.group("pid")))
        elif m or _LEGACY_TMP.match(name):
            try:
                stale = before is not None and os.stat(path).st_mtime < before
            except FileNotFoundError:
                continue
        else:
            continue
        if stale:
            try:
                os.unlink(path)
                removed.append(path)
            except FileNotFoundError:  # its writer, or another cleaner, got there first
                pass
    return removed


def save_checkpoint(path: str | os.PathLike, tree: PyTree, metadata: dict | None = None) -> None:
    """Write every array leaf of `tree` (and JSON-serialisable `metadata`) to `path`, atomically.

    The bytes go to a temporary file in the same folder, are flushed and fsynced, then `os.replace`d onto
    `path`, and the folder is fsynced: after a crash at any point `path` holds either the old or the new
    checkpoint, never a mixture, and no temporary file is left behind by an exception. A read-only `path` or
    folder is refused (`CheckpointError`), never replaced.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if os.path.exists(path) and _read_only(path):
        raise CheckpointError(
            f"checkpoint {path} is read-only: refusing to replace it (make it writable, move it, or save elsewhere)"
        )
    if _read_only(folder):
        raise CheckpointError(f"checkpoint folder {folder} is read-only: cannot save {os.path.basename(path)} there")
    entries, chunks, offset = [], [], 0
    payload_hash = hashlib.sha256()
    for name, leaf in _leaves(tree):
        arr, dtype = _host(leaf)
        data = np.ascontiguousarray(arr).tobytes()
        entries.append({"path": name, "shape": list(arr.shape), "dtype": dtype, "offset": offset, "nbytes": len(data)})
        payload_hash.update(data)
        chunks.append(data)
        offset += len(data)
    header = json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "leaves": entries,
            "payload_nbytes": offset,
            "payload_sha256": payload_hash.hexdigest(),
            "metadata": metadata or {},
        },
        sort_keys=True,
    ).encode()
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{_host_tag()}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: a fresh file of our own; mode 0o666 lets the umask decide permissions, as for any new file.
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except PermissionError as e:
        raise CheckpointError(f"checkpoint folder {folder}: cannot write there ({e.strerror})") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)))
            f.write(header)
            f.write(hashlib.sha256(header).digest())
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_header(path: str | os.PathLike) -> dict:
    """The verified header of a checkpoint (leaves and `metadata`), without reading the payload."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size:
                raise CheckpointError(f"checkpoint {path}: truncated ({len(prefix)} bytes; not even a header)")
            magic, version, hlen = _PREFIX.unpack(prefix)
            if magic != MAGIC:
                raise CheckpointError(f"checkpoint {path}: not a scoreflow checkpoint (bad magic bytes {magic!r})")
            if version != FORMAT_VERSION:
                raise CheckpointError(
                    f"checkpoint {path}: unknown format version {version}; this scoreflow reads version "
                    f"{FORMAT_VERSION}"
                )
            header_bytes, digest = f.read(hlen), f.read(32)
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path}: no such file") from e
    if len(header_bytes) < hlen or len(digest) < 32:
        raise CheckpointError(f"checkpoint {path}: truncated (the header is cut short)")
    if hashlib.sha256(header_bytes).digest() != digest:
        raise CheckpointError(f"checkpoint {path}: corrupted header (SHA-256 mismatch)")
    return json.loads(header_bytes)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, bytes]:
    """Read and verify a checkpoint file: returns (header, payload). Raises `CheckpointError` naming the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path}: no such file") from e
    if len(blob) < _PREFIX.size:
        raise CheckpointError(f"checkpoint {path}: truncated ({len(blob)} bytes; not even a header)")
    magic, version, hlen = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointError(f"checkpoint {path}: not a scoreflow checkpoint (bad magic bytes {magic!r})")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: unknown format version {version}; this scoreflow reads version {FORMAT_VERSION}"
        )
    start = _PREFIX.size
    if len(blob) < start + hlen + 32:
        raise CheckpointError(f"checkpoint {path}: truncated (file has {len(blob)} bytes, header needs more)")
    header_bytes = blob[start : start + hlen]
    if hashlib.sha256(header_bytes).digest() != blob[start + hlen : start + hlen + 32]:
        raise CheckpointError(f"checkpoint {path}: corrupted header (SHA-256 mismatch)")
    header = json.loads(header_bytes)
    if header.get("format_version") != version:
        raise CheckpointError(f"checkpoint {path}: header version {header.get('format_version')} != {version}")
    payload = blob[start + hlen + 32 :]
    if len(payload) != header["payload_nbytes"]:
        raise CheckpointError(
            f"checkpoint {path}: truncated or padded payload ({len(payload)} bytes, header says "
            f"{header['payload_nbytes']})"
        )
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise CheckpointError(f"checkpoint {path}: corrupted payload (SHA-256 mismatch)")
    return header, payload


def load_checkpoint(path: str | os.PathLike, like: PyTree) -> tuple[PyTree, dict]:
    """Load a checkpoint into the structure of the template `like`; returns (tree, metadata).

    Every array leaf of `like` must be in the file with the same path, shape and dtype, and the file must hold
    no other leaf. Non-array leaves (static fields, functions) are taken from `like`. Leaves come back as
    host-committed `jax.Array`s; place them on devices (e.g. `replicate`) as needed.
    """
    path = os.fspath(path)
    header, payload = read_checkpoint(path)
    stored = {e["path"]: e for e in header["leaves"]}
    expected = _leaves(like)
    names = [n for n, _ in expected]
    missing = [n for n in names if n not in stored]
    extra = [n for n in stored if n not in set(names)]
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {path}: leaves do not match the expected structure; missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}"
        )
    values = []
    for name, leaf in expected:
        e = stored[name]
        arr, dtype = _host(leaf)
        if tuple(e["shape"]) != arr.shape or e["dtype"] != dtype:
            raise CheckpointError(
                f"checkpoint {path}: leaf {name} has shape {tuple(e['shape'])} and dtype {e['dtype']}; expected "
                f"shape {arr.shape} and dtype {dtype}"
            )
        raw = np.frombuffer(payload, dtype=arr.dtype, count=arr.size, offset=e["offset"]).reshape(arr.shape)
        if _is_key(leaf):
            values.append(jax.random.wrap_key_data(raw.copy(), impl=jax.random.key_impl(leaf)))
        else:
            values.append(jnp.asarray(raw.copy()))
    flat, treedef = jax.tree_util.tree_flatten(like, is_leaf=_is_key)
    it = iter(values)
    out = [next(it) if (eqx.is_array(x) or isinstance(x, np.ndarray)) else x for x in flat]
    return jax.tree_util.tree_unflatten(treedef, out), header["metadata"]
