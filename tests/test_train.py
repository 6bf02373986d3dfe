"""Training edge: optimiser schedule, EMA, gradient accumulation, convergence to an analytic optimum,
bit-identical resume, and the 8-device (forced host platform) run matching the 1-device run."""

import json
import math
import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoreflow.train as sft


class Linear(eqx.Module):
    w: jax.Array
    b: jax.Array

    def __call__(self, x):
        return x @ self.w + self.b


def _regression(n=256, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ np.array([1.5, -2.0, 0.5])[:d] + 0.3 + 0.1 * rng.normal(size=n)
    return {"x": x, "y": y}


def _mse(model, batch, key):
    # A key-dependent term with zero mean keeps the test honest about per-step keys.
    r = model(batch["x"]) - batch["y"]
    noise = 1e-3 * jax.random.normal(key, r.shape)
    loss = jnp.mean(r**2) + jnp.mean(noise * r)
    return loss, {"mse": jnp.mean(r**2)}


def _linear(d=3):
    return Linear(jnp.zeros(d), jnp.zeros(()))


def test_warmup_cosine_learning_rate():
    # With a constant gradient g, Adam's bias-corrected step is lr_t * g / (|g| + eps): the parameter
    # moves by -lr_t per step, so the trajectory reads off the schedule.
    lr, total, warm, end = 0.1, 20, 5, 0.05
    opt = sft.make_optimiser(lr, total_steps=total, warmup_steps=warm, end_fraction=end, clip_norm=None, b2=0.99)
    p = jnp.asarray(0.0)
    s = opt.init(p)
    moves = []
    for _ in range(total):
        u, s = opt.update(jnp.asarray(1.0), s, p)
        moves.append(-float(u))
    expected = []
    for t in range(total):
        if t < warm:
            expected.append(lr * t / warm)
        else:
            c = 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))
            expected.append(end * lr + (lr - end * lr) * c)
    np.testing.assert_allclose(moves, expected, rtol=1e-6, atol=1e-9)


def test_clipping_bounds_the_update():
    # Adam's second moment after one step is (1 - b2) g_clipped^2: norm 5 is rescaled to 0.5.
    opt = sft.make_optimiser(1.0, total_steps=10, warmup_steps=0, clip_norm=0.5, b2=0.99)
    p = {"a": jnp.zeros(2)}
    _, s = opt.update({"a": jnp.array([3.0, 4.0])}, opt.init(p), p)
    np.testing.assert_allclose(optax.tree_utils.tree_get(s, "nu")["a"], 0.01 * np.array([0.09, 0.16]), rtol=1e-12)


def test_ema_formula_and_step():
    opt = sft.make_optimiser(0.05, total_steps=10, warmup_steps=0)
    data = _regression()
    state = sft.init_state(_linear(), opt, key=jax.random.key(0))
    step = sft.make_train_step(_mse, opt, ema_decay=0.9)
    batch = jax.tree.map(lambda a: jnp.asarray(a[None, :32]), data)
    ema = state.model
    for _ in range(3):
        state, _ = step(state, batch)
        ema = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, ema, state.model)
    np.testing.assert_allclose(state.ema.w, ema.w, rtol=1e-12)
    np.testing.assert_allclose(state.ema.b, ema.b, rtol=1e-12)
    assert int(state.step) == 3


def test_gradient_accumulation_matches_full_batch():
    data = jax.tree.map(jnp.asarray, _regression(n=32))
    opt = sft.make_optimiser(0.05, total_steps=10, warmup_steps=2)

    def loss(model, batch, key):  # no key dependence: full batch and micro-batches see the same maths
        r = model(batch["x"]) - batch["y"]
        return jnp.mean(r**2), {}

    step = sft.make_train_step(loss, opt)
    a = b = sft.init_state(_linear(), opt, key=jax.random.key(0))
    for _ in range(4):
        a, ma = step(a, jax.tree.map(lambda v: v[None], data))
        b, mb = step(b, jax.tree.map(lambda v: v.reshape(4, 8, *v.shape[1:]), data))
        assert float(ma["loss"]) == pytest.approx(float(mb["loss"]), rel=1e-12)
    np.testing.assert_allclose(a.model.w, b.model.w, rtol=1e-12)
    np.testing.assert_allclose(a.model.b, b.model.b, rtol=1e-12)


def test_loop_converges_to_least_squares():
    data = _regression(n=512)
    opt = sft.make_optimiser(0.05, total_steps=400, warmup_steps=20)
    state = sft.init_state(_linear(), opt, key=jax.random.key(0), ema=False)
    step = sft.make_train_step(_mse, opt)
    state = sft.train_loop(state, step, data, num_steps=400, batch_size=64, progress=False)
    X = np.concatenate([data["x"], np.ones((512, 1))], axis=1)
    coef = np.linalg.lstsq(X, data["y"], rcond=None)[0]
    np.testing.assert_allclose(np.append(np.asarray(state.model.w), float(state.model.b)), coef, atol=2e-3)


def test_batch_indices_are_epochs_and_functions_of_step():
    n, b = 10, 4
    stream = np.concatenate([sft.batch_indices(n, b, s, seed=3) for s in range(5)])  # 20 = two epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    np.testing.assert_array_equal(sft.batch_indices(n, b, 3, seed=3), stream[12:16])
    assert not np.array_equal(stream[:10], stream[10:])


def _run(tmp_path, interrupt_at=None, restore=False):
    data = _regression()
    opt = sft.make_optimiser(0.05, total_steps=12, warmup_steps=3)
    state = sft.init_state(_linear(), opt, key=jax.random.key(42))
    step = sft.make_train_step(_mse, opt, ema_decay=0.8)
    if restore:
        state, meta = sft.restore_latest(tmp_path, state)
        assert meta["step"] == int(state.step)

    def cb(s, m):
        if s == interrupt_at:
            raise KeyboardInterrupt

    return sft.train_loop(
        state,
        step,
        data,
        num_steps=12,
        batch_size=16,
        accumulate=2,
        seed=1,
        checkpoint_dir=tmp_path,
        checkpoint_every=5,
        log_every=1,
        callback=cb,
        progress=False,
    )


def test_resume_after_interruption_is_bit_identical(tmp_path):
    full = _run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", interrupt_at=8)
    assert [s for s, _ in sft.list_checkpoints(tmp_path / "b")] == [5]
    resumed = _run(tmp_path / "b", restore=True)
    leaves = lambda s: jax.tree.leaves(eqx.filter((s.model, s.ema, s.opt_state, s.step), eqx.is_array))
    for x, y in zip(leaves(full), leaves(resumed), strict=True):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


_SCRIPT = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
import scoreflow as sf, scoreflow.train as sft, scoreflow.data as sfd

sde = sf.VPSDE(sf.CosineSchedule())
def dsm(model, x, key):
    kt, ke = jax.random.split(key)
    t = jax.random.uniform(kt, (x.shape[0],), minval=1e-3, maxval=1.0)
    e = jax.random.normal(ke, x.shape)
    def one(t, x, e):
        a, s = sde.alpha_sigma(t)
        return jnp.sum((s * model(t, a * x + s * e) + e) ** 2)
    return jnp.mean(jax.vmap(one)(t, x, e)), {}

data = sfd.load_toy("two", 256, 16).train.astype(np.float64)
model = sf.ScoreModel(sf.MLP(2, width=32, depth=1, embedding_dim=16, key=jax.random.key(0)), sde)
opt = sft.make_optimiser(1e-2, total_steps=6, warmup_steps=1)
state = sft.init_state(model, opt, key=jax.random.key(1))
mesh = sft.make_mesh()
step = sft.make_train_step(dsm, opt, mesh=mesh)
losses = []
state = sft.train_loop(state, step, data, num_steps=6, batch_size=16, accumulate=2, mesh=mesh, log_every=1,
                       callback=lambda s, m: losses.append(m["loss"]), progress=False)
w = state.model.network.blocks[0].proj.weight
print(json.dumps({"devices": len(jax.devices()), "mesh": int(mesh.devices.size),
                  "w_sharding_devices": len(w.sharding.device_set), "losses": losses,
                  "params": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(sft.trainable(state.model))]}))
"""


def _start(n_devices):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}", JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, "-c", _SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _result(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_eight_devices_match_one_device():
    p1, p8 = _start(1), _start(8)  # XLA_FLAGS must be set before jax is imported: fresh processes
    one, eight = _result(p1), _result(p8)
    assert (one["devices"], one["mesh"]) == (1, 1)
    assert (eight["devices"], eight["mesh"], eight["w_sharding_devices"]) == (8, 8, 8)
    # Same loss curve and parameters up to float64 reassociation of the batch reductions.
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-10)
    for a, b in zip(one["params"], eight["params"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-11)


def test_should_stop_saves_and_returns_at_the_step_boundary(tmp_path):
    data = _regression()
    opt = sft.make_optimiser(0.05, total_steps=12, warmup_steps=3)
    state = sft.init_state(_linear(), opt, key=jax.random.key(42))
    step = sft.make_train_step(_mse, opt)
    polls, firsts = [], []

    def should_stop():
        polls.append(len(polls) + 1)
        return len(polls) == 3  # polled after steps 1, 2, 3

    out = sft.train_loop(
        state,
        step,
        data,
        num_steps=12,
        batch_size=16,
        checkpoint_dir=tmp_path,
        checkpoint_every=10,
        progress=False,
        checkpoint_metadata=lambda s: {"at": s},
        should_stop=should_stop,
        on_first_step=lambda: firsts.append(len(polls)),
    )
    assert int(out.step) == 3 and polls == [1, 2, 3] and firsts == [0]
    assert [s for s, _ in sft.list_checkpoints(tmp_path)] == [3]
    back, meta = sft.restore_latest(tmp_path, state)
    assert int(back.step) == 3 and meta == {"step": 3, "at": 3}
    np.testing.assert_array_equal(np.asarray(back.model.w), np.asarray(out.model.w))
