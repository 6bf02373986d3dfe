"""`scoreflow train --model recovery-ebm` end to end on a tiny ring8 run: the run folder, the per-level gaps in the
metrics, the reported normalised density recomputed from the saved checkpoint, `sample` reproducing training's
samples, `info`, and the refusals."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreflow._cli import ebm, main as cli_main
from scoreflow._cli.options import UsageError


TINY = [
    "--data", "toy:ring8", "--steps", "6", "--batch-size", "16", "--width", "16", "--depth", "1", "--levels", "3",
    "--langevin-steps", "3", "--smc-particles", "64", "--log-every", "2", "--checkpoint-every", "3", "--keep", "5",
    "--num-samples", "12", "--warmup", "2", "--no-progress",
]  # fmt: skip


def test_train_sample_info(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli_main.main(["train", "--model", "recovery-ebm", *TINY, "--out", out]) == 0
    run = tmp_path / "run"
    cfg = json.load(open(run / "config.json"))
    assert cfg["config"]["model"] == "recovery-ebm" and cfg["config"]["levels"] == 3
    assert len(cfg["schedule"]["alphas"]) == 4  # a_0 (the jitter) and one a per level

    res = json.load(open(run / "results.json"))
    assert res["steps"] == 6 and res["skipped_updates"] == 0 and res["nan_samples"] == 0
    assert res["parameters_finite"] and np.isfinite(res["log_z_smc"]) and res["log_z_stderr"] > 0

    # every logged step carries a finite loss and one energy gap per level
    metrics = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [m["step"] for m in metrics] == [2, 4, 6]
    assert all(np.isfinite(m["loss"]) and {"gap0", "gap1", "gap2"} <= set(m) for m in metrics)
    assert (run / "energy.png").stat().st_size > 0 and (run / "samples.png").stat().st_size > 0
    samples = np.load(run / "samples.npy")
    assert samples.shape == (12, 2) and np.all(np.isfinite(samples))

    # The reported density is the saved EMA model's: -E(a'_0 x, 0) - log Z on the test set, recomputed from the
    # checkpoint; the exact column is the ring mixture's own test log-likelihood.
    _, c, ds, state = ebm.load_run(out)
    assert int(state.step) == 6
    lp = jax.jit(jax.vmap(ebm.level0_log_prob(state.ema)))(jnp.asarray(ds.test, jnp.float32))
    ll = np.asarray(lp, np.float64) - res["log_z_smc"]
    assert res["test_loglik"] == pytest.approx(float(ll.mean()), rel=1e-5, abs=1e-5)
    se = float(ll.std(ddof=1) / math.sqrt(len(ll)))
    assert res["test_loglik_stderr_over_examples"] == pytest.approx(se, rel=1e-4)
    exact = float(np.mean(np.asarray(ds.density.log_prob(jnp.asarray(ds.test, jnp.float32)))))
    assert res["test_loglik_exact"] == pytest.approx(exact, rel=1e-5)
    # the EMA (decay 0.999 over 6 steps) is not the raw model: the file holds both and training used the EMA
    w_ema = np.asarray(state.ema.network.out.linear.weight)
    assert not np.array_equal(w_ema, np.asarray(state.model.network.out.linear.weight))

    capsys.readouterr()
    assert cli_main.main(["sample", out]) == 0
    again = np.load(run / "samples_step000006.npy")
    np.testing.assert_array_equal(again, samples)  # `sample RUN` with no options draws training's samples
    assert cli_main.main(["sample", out, "--seed", "1", "--num-samples", "5"]) == 0
    other = np.load(run / "samples_step000006_seed1.npy")
    assert other.shape == (5, 2) and not np.allclose(other, samples[:5])
    assert cli_main.main(["info", out]) == 0
    text = capsys.readouterr().out
    assert "model=recovery-ebm" in text and "log_z_smc" in text
    with pytest.raises(SystemExit) as e:
        cli_main.main(["nll", out])
    assert e.value.code == 2 and "recovery-likelihood EBM run" in capsys.readouterr().err


def test_bad_options_are_refused(tmp_path):
    ring = ebm.load_data({"data": "toy:ring8", "bits": 8, "seed": 0})
    base = {"data": "toy:ring8", "levels": 6, "step_b": 0.3, "batch_size": 16}
    with pytest.raises(UsageError, match="--step-b 1.5"):
        ebm._resolve({**base, "step_b": 1.5}, ring)
    with pytest.raises(UsageError, match="--levels 600"):
        ebm._resolve({**base, "levels": 600}, ring)
    text = ebm.load_data({"data": "text", "bits": 8, "seed": 0, "seq_len": 16})
    with pytest.raises(UsageError, match="needs vectors"):
        ebm._resolve({**base, "data": "text"}, text)
