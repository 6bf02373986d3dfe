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
