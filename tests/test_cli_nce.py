"""`scoreflow train --model nce-prior` (tiny sizes): the run folder, fixed checkpoint structure over the stages,
frozen stages that stay frozen, `sample` reproducing samples.npy and `info`."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreflow import train as sft
from scoreflow._cli import main as cli_main, nce
from scoreflow._cli.options import UsageError


TINY = [
    "--data", "toy:ring8", "--steps", "8", "--stages", "2", "--batch-size", "16", "--width", "16", "--depth", "1",
    "--latent-dim", "3", "--ratio-width", "8", "--reference-size", "32", "--prior-steps", "3",
    "--posterior-steps", "2", "--log-every", "2", "--checkpoint-every", "4", "--keep", "5", "--num-samples", "12",
    "--no-progress",
]  # fmt: skip


def test_stage_bookkeeping():
    c = {"steps": 10, "stages": 3}
    assert nce.stage_starts(c) == [0, 3, 6]
    assert [nce.stage_of(c, s) for s in range(10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert [nce.active_stages(c, s) for s in (0, 1, 3, 4, 6, 7, 10)] == [0, 1, 1, 2, 2, 3, 3]


def test_stacked_ratio_sums_the_active_slots():
    c = {"seed": 0, "latent_dim": 3, "width": 8, "depth": 1, "stages": 3, "ratio_width": 4, "noise_std": 0.3}
    model = nce.build_model(c, (2,))
    # give every slot a nonzero last layer so that each contributes
    model = eqx.tree_at(
        lambda m: m.ratios.mlp.layers[-1].bias, model, jnp.asarray([[1.0], [10.0], [100.0]], jnp.float32)
    )
    z = jnp.asarray([0.3, -0.2, 0.5], jnp.float32)
    slot = eqx.filter_jit(lambda m, k: m.slot(k)(z))
    log_ratio = eqx.filter_jit(lambda m, a: m.prior(a).log_ratio(z))
    h = [float(slot(model, jnp.int32(k))) for k in range(3)]
    assert h == pytest.approx([1.0, 10.0, 100.0])
    for active in range(4):
        got = float(log_ratio(model, jnp.int32(active)))
        assert got == pytest.approx(sum(h[:active]), rel=1e-6), active


def _load(path):
    c = {
        "seed": 0, "latent_dim": 3, "width": 16, "depth": 1, "stages": 2, "ratio_width": 8, "noise_std": 0.3,
        "lr": 3e-3, "clip": 1.0, "reference_size": 32,
    }  # fmt: skip
    state, _ = sft.load_checkpoint(path, nce.build_state(c, (2,)))
    return state


def test_train_sample_info(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli_main.main(["train", "--model", "nce-prior", *TINY, "--out", out]) == 0
    cfg = json.load(open(tmp_path / "run" / "config.json"))
    assert cfg["config"]["model"] == "nce-prior" and cfg["stage_starts"] == [0, 4]
    res = json.load(open(tmp_path / "run" / "results.json"))
    assert res["steps"] == 8 and res["stages_trained"] == 2 and res["nan_samples"] == 0 and res["parameters_finite"]
    assert np.isfinite(res["test_recon_mse"]) and res["skipped_updates"] == 0
    metrics = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [m["step"] for m in metrics] == [2, 4, 6, 8] and [m["stage"] for m in metrics] == [1, 1, 2, 2]
    assert all(np.isfinite(m["loss"]) for m in metrics)
    assert (tmp_path / "run" / "samples.png").exists()
    samples = np.load(tmp_path / "run" / "samples.npy")
    assert samples.shape == (12, 2) and np.all(np.isfinite(samples))

    # the checkpoint at the end of stage 1 and the final one share one structure; stage 1's ratio was trained,
    # then stayed frozen through stage 2 (the optimiser restarts per stage), while the generator kept learning
    ckpts = dict(sft.list_checkpoints(str(tmp_path / "run" / "checkpoints")))
    s4, s8 = _load(ckpts[4]), _load(ckpts[8])
    fresh = nce.build_model({**cfg["config"]}, (2,))
    assert not _same(s4.model.slot(0), fresh.slot(0))
    assert _same(s4.model.slot(0), s8.model.slot(0))
    assert _same(s4.model.slot(1), fresh.slot(1))
    assert not _same(s4.model.slot(1), s8.model.slot(1))
    assert not _same(s4.model.generator, s8.model.generator)

    capsys.readouterr()
    assert cli_main.main(["sample", out]) == 0
    again = np.load(tmp_path / "run" / "samples_step000008.npy")
    np.testing.assert_array_equal(again, samples)  # `sample RUN` with no options draws training's samples
    assert cli_main.main(["info", out]) == 0
    text = capsys.readouterr().out
    assert "model=nce-prior" in text and "K=2, starting at steps [0, 4]" in text and "stages_trained" in text


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(UsageError, match="--stages 9"):
        nce._resolve({"data": "toy:ring8", "stages": 9, "steps": 8, "accumulate": 1, "batch_size": 16}, _ring())
    with pytest.raises(SystemExit) as e:
        cli_main.main(["train", "--model", "nce-prior", *TINY, "--accumulate", "2", "--out", str(tmp_path / "r")])
    assert e.value.code == 2


def _same(a, b) -> bool:
    la, lb = (jax.tree.leaves(eqx.filter(t, eqx.is_array)) for t in (a, b))
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def _ring():
    from scoreflow._cli.datasets import load_data

    return load_data({"data": "toy:ring8", "bits": 8, "seed": 0})
