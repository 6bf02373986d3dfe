"""Checkpoints: bit-exact round trip, atomic saves, and refusal of every kind of damaged or mismatched file."""

import os
import struct

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoreflow.train as sft


def _tree(seed=0):
    mlp = eqx.nn.MLP(3, 2, 8, 2, key=jax.random.key(seed))
    opt = optax.adam(1e-3)
    return {
        "model": mlp,
        "opt": opt.init(eqx.filter(mlp, eqx.is_inexact_array)),
        "step": jnp.asarray(7, jnp.int32),
        "key": jax.random.key(seed + 11),
        "f32": jnp.arange(5, dtype=jnp.float32) / 3,
    }


def _flat(tree):
    out = []
    for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array)):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append((np.asarray(x).dtype.str, np.asarray(x).tobytes()))
    return out


def test_round_trip_is_bit_exact(tmp_path):
    tree = _tree()
    p = tmp_path / "a.ckpt"
    sft.save_checkpoint(p, tree, {"step": 7, "note": "x"})
    back, meta = sft.load_checkpoint(p, _tree(seed=5))
    assert meta == {"step": 7, "note": "x"}
    assert _flat(back) == _flat(tree)
    assert back["key"].dtype == tree["key"].dtype  # typed keys stay typed
    # The MLP's activation functions (non-array leaves) come from the template, and the model runs.
    x = jnp.ones(3)
    np.testing.assert_array_equal(back["model"](x), tree["model"](x))
    assert os.listdir(tmp_path) == ["a.ckpt"]


def _save_two(tmp_path):
    old, new = tmp_path / "old.ckpt", tmp_path / "new.ckpt"
    sft.save_checkpoint(old, _tree(1))
    sft.save_checkpoint(new, _tree(2))
    return old, new


@pytest.mark.parametrize("cut", [3, 20, 200, -1])
def test_truncated_file_refused_previous_loads(tmp_path, cut):
    old, new = _save_two(tmp_path)
    blob = new.read_bytes()
    new.write_bytes(blob[:cut])
    with pytest.raises(sft.CheckpointError, match=rf"{new}: (truncated|corrupted)"):
        sft.load_checkpoint(new, _tree())
    back, _ = sft.load_checkpoint(old, _tree())
    assert _flat(back) == _flat(_tree(1))


@pytest.mark.parametrize(
    "where, message",
    [(0, "not a scoreflow checkpoint"), (30, "corrupted header"), (-5, "corrupted payload")],
)
def test_flipped_byte_refused(tmp_path, where, message):
    p = tmp_path / "a.ckpt"
    sft.save_checkpoint(p, _tree())
    blob = bytearray(p.read_bytes())
    blob[where] ^= 0x01
    p.write_bytes(bytes(blob))
    with pytest.raises(sft.CheckpointError, match=rf"{p}: {message}"):
        sft.load_checkpoint(p, _tree())


def test_unknown_version_refused(tmp_path):
    p = tmp_path / "a.ckpt"
    sft.save_checkpoint(p, _tree())
    blob = bytearray(p.read_bytes())
    blob[8:12] = struct.pack("<I", 99)
    p.write_bytes(bytes(blob))
    with pytest.raises(sft.CheckpointError, match=rf"{p}: unknown format version 99; .* reads version 1"):
        sft.load_checkpoint(p, _tree())


def test_structure_mismatches_refused(tmp_path):
    p = tmp_path / "a.ckpt"
    tree = _tree()
    sft.save_checkpoint(p, tree)
    extra = dict(tree, more=jnp.zeros(2))
    with pytest.raises(sft.CheckpointError, match=r"missing \[\"\['more'\]\"\], unexpected \[\]"):
        sft.load_checkpoint(p, extra)
    fewer = {k: v for k, v in tree.items() if k != "f32"}
    with pytest.raises(sft.CheckpointError, match=r"missing \[\], unexpected \[\"\['f32'\]\"\]"):
        sft.load_checkpoint(p, fewer)
    with pytest.raises(
        sft.CheckpointError, match=r"leaf \['f32'\] has shape \(5,\) and dtype <f4; expected shape \(6,\)"
    ):
        sft.load_checkpoint(p, dict(tree, f32=jnp.zeros(6, jnp.float32)))
    with pytest.raises(sft.CheckpointError, match=r"leaf \['step'\] has shape \(\) and dtype <i4; expected .*<i8"):
        sft.load_checkpoint(p, dict(tree, step=np.asarray(7, np.int64)))


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_interrupted_save_keeps_previous(tmp_path, monkeypatch, fail_at):
    p = tmp_path / "a.ckpt"
    sft.save_checkpoint(p, _tree(1))
    before = p.read_bytes()

    def boom(*args):
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(os, fail_at, boom)
    with pytest.raises(KeyboardInterrupt):
        sft.save_checkpoint(p, _tree(2))
    monkeypatch.undo()
    assert p.read_bytes() == before and os.listdir(tmp_path) == ["a.ckpt"]  # no temporary file left
    assert _flat(sft.load_checkpoint(p, _tree())[0]) == _flat(_tree(1))


def test_restore_latest_skips_damaged_newest(tmp_path):
    like = sft.TrainState(_tree(0)["model"], None, None, jnp.asarray(0, jnp.int32), jax.random.key(0))
    for s in (5, 10):
        st = eqx.tree_at(lambda t: t.step, like, jnp.asarray(s, jnp.int32))
        sft.save_state(tmp_path, st, keep=3)
    newest = sft.checkpoint_path(tmp_path, 10)
    with open(newest, "r+b") as f:
        f.truncate(100)
    with pytest.warns(UserWarning, match=r"step_00000010\.ckpt: truncated"):
        back, meta = sft.restore_latest(tmp_path, like)
    assert int(back.step) == 5 and meta["step"] == 5
    # keep=2 deletes all but the newest two.
    for s in (15, 20):
        sft.save_state(tmp_path, eqx.tree_at(lambda t: t.step, like, jnp.asarray(s, jnp.int32)), keep=2)
    assert [s for s, _ in sft.list_checkpoints(tmp_path)] == [15, 20]


def _tmp_name(target, host, pid):
    return f".{target}.{host}.{pid}.{'0123456789abcdef'}.tmp"


def test_clean_temporaries_removes_dead_writers_only(tmp_path):
    import subprocess
    import sys
    import time

    from scoreflow.train.checkpoint import _host_tag

    host = _host_tag()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs (and is reaped)
    names = {
        "dead": _tmp_name("step_1.ckpt", host, dead.pid),
        "live": _tmp_name("step_2.ckpt", host, os.getpid()),
        "other_old": _tmp_name("step_3.ckpt", "otherhost", 12345),
        "other_new": _tmp_name("step_4.ckpt", "otherhost", 12345),
        "legacy_old": ".step_5.ckpt.0123456789abcdef.tmp",
        "legacy_new": ".step_6.ckpt.fedcba9876543210.tmp",
        "unrelated": "notes.tmp",
    }
    for n in names.values():
        (tmp_path / n).write_bytes(b"x" * 10)
    old = time.time() - 3600
    for k in ("other_old", "legacy_old"):
        os.utime(tmp_path / names[k], (old, old))
    # without a start time: only the dead writer's file (this host, pid not running)
    assert sft.clean_temporaries(tmp_path) == [str(tmp_path / names["dead"])]
    # with the run's start time: also files that cannot be checked but were left before the run started
    start = time.time() - 60
    removed = sorted(os.path.basename(p) for p in sft.clean_temporaries(tmp_path, before=start))
    assert removed == sorted([names["other_old"], names["legacy_old"]])
    assert sorted(os.listdir(tmp_path)) == sorted([names["live"], names["other_new"], names["legacy_new"], "notes.tmp"])


_KILLED_SAVE = r"""
import os, sys, time
import jax.numpy as jnp
import scoreflow.train as sft

def stall(fd):  # the bytes are written; stall before the rename, as a long fsync would
    print("writing", flush=True)
    time.sleep(120)

os.fsync = stall
sft.save_checkpoint(sys.argv[1], {"w": jnp.ones((256, 1024))})
"""


def test_save_killed_with_sigkill_leaves_a_temporary_the_next_save_removes(tmp_path):
    import signal
    import subprocess
    import sys

    target = tmp_path / "step_00000001.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(left) == 1 and f".{proc.pid}." in left[0] and not target.exists()
    assert os.path.getsize(tmp_path / left[0]) > 1_000_000  # the 1 MB payload was written
    like = sft.TrainState(jnp.zeros(2), None, None, jnp.asarray(2, jnp.int32), jax.random.key(0))
    sft.save_state(tmp_path, like)
    assert os.listdir(tmp_path) == ["step_00000002.ckpt"]


def test_read_only_checkpoint_and_folder_are_not_replaced(tmp_path):
    p = tmp_path / "a.ckpt"
    sft.save_checkpoint(p, _tree(1))
    before = p.read_bytes()
    os.chmod(p, 0o444)
    try:
        with pytest.raises(sft.CheckpointError, match=rf"checkpoint {p} is read-only: refusing to replace it"):
            sft.save_checkpoint(p, _tree(2))
        assert p.read_bytes() == before and os.listdir(tmp_path) == ["a.ckpt"]
    finally:
        os.chmod(p, 0o644)
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o555)
    try:
        with pytest.raises(sft.CheckpointError, match=rf"checkpoint folder {folder} is read-only"):
            sft.save_checkpoint(folder / "b.ckpt", _tree(1))
    finally:
        os.chmod(folder, 0o755)
    # keep= never deletes a read-only checkpoint
    like = sft.TrainState(jnp.zeros(2), None, None, jnp.asarray(0, jnp.int32), jax.random.key(0))
    d = tmp_path / "ckpts"
    sft.save_state(d, eqx.tree_at(lambda t: t.step, like, jnp.asarray(1, jnp.int32)), keep=1)
    os.chmod(sft.checkpoint_path(d, 1), 0o444)
    sft.save_state(d, eqx.tree_at(lambda t: t.step, like, jnp.asarray(2, jnp.int32)), keep=1)
    assert [s for s, _ in sft.list_checkpoints(d)] == [1, 2]


def test_read_header_gives_metadata_without_the_payload(tmp_path):
    p = tmp_path / "a.ckpt"
    sft.save_checkpoint(p, _tree(1), {"step": 3, "note": "x"})
    assert sft.read_header(p)["metadata"] == {"step": 3, "note": "x"}
    blob = bytearray(p.read_bytes())
    blob[30] ^= 1
    p.write_bytes(bytes(blob))
    with pytest.raises(sft.CheckpointError, match="corrupted header"):
        sft.read_header(p)
