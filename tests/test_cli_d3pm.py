"""`scoreflow train --model d3pm`: tiny runs write full run folders whose reported bounds equal the bound computed
directly with `d3pm_bound_bpd` on the same test subset and keys; bad values exit 2 naming the option and value."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf
import scoreflow.data as sfd
from scoreflow._cli import d3pm
from scoreflow._cli.main import main

from .helpers import cli_exits_2


def _keys(seed, n):
    # the documented evaluation keys: example i uses fold_in(fold_in(key(seed), 3), i)
    base = jax.random.fold_in(jax.random.key(seed), 3)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n))


def _direct_bound(model, transition, levels, seed):
    keys = _keys(seed, len(levels))
    bpd = jax.jit(jax.vmap(lambda x, k: sf.d3pm_bound_bpd(model, transition, x, key=k)))(jnp.asarray(levels), keys)
    return float(jnp.mean(bpd))


TINY = ["--steps", "1", "--warmup", "1", "--batch-size", "4", "--no-progress", "--checkpoint-every", "1"]


def test_digits_run_folder_and_bound(tmp_path, capsys):
    run = str(tmp_path / "run")
    n_eval, T = 5, 3
    argv = [
        "train",
        "--model",
        "d3pm",
        "--transition",
        "gaussian",
        "--timesteps",
        str(T),
        "--channels",
        "8",
        "--eval-examples",
        str(n_eval),
        "--num-samples",
        "4",
        "--initial-bound",
        "--out",
        run,
        *TINY,
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "test bound (D3PM gaussian, T=3" in out and "per-pixel categorical" in out
    for name in (
        "config.json",
        "metrics.jsonl",
        "results.json",
        "samples.png",
        "samples.npy",
        "curves.png",
        os.path.join("checkpoints", "step_00000001.ckpt"),
    ):
        assert os.path.getsize(os.path.join(run, name)) > 0, name
    cfg = json.load(open(os.path.join(run, "config.json")))
    assert cfg["config"]["model"] == "d3pm" and cfg["config"]["hybrid_coeff"] == pytest.approx(0.001 * T)
    assert cfg["transition"] == {"class": "GaussianTransition", "num_states": 17, "num_steps": T}
    rec = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert rec[0]["step"] == 0 and [r["step"] for r in rec[1:]] == [1, 1]
    res = json.load(open(os.path.join(run, "results.json")))
    assert res["eval_examples"] == n_eval and res["initial_test_bound_bpd"] == rec[0]["test_bound_bpd"]
    assert res["baselines_bpd"]["categorical"] == pytest.approx(2.4221, abs=1e-3)  # as in test_cli

    # The U-Net's output conv is zero-initialised, so the x0 logits are 0 (uniform over 17 levels) and the bound
    # at step 0 is that of a zero-logit model, recomputed here from scratch with the documented keys.
    _, _, ds, _, state = d3pm.load_run(run)
    levels = sfd.load_digits().levels("test")[:n_eval].astype(np.int32)
    logits = state.model(jnp.asarray(0.5), jnp.asarray(levels[0]))
    assert logits.shape == (1, 8, 8, 17) and float(jnp.max(jnp.abs(logits))) == 0.0
    transition = sf.GaussianTransition(17, T, sf.LinearBetaSchedule(0.02, 1.0))
    expected = _direct_bound(lambda s, x, cond=None, *, key=None: jnp.zeros(x.shape + (17,)), transition, levels, 0)
    assert rec[0]["test_bound_bpd"] == pytest.approx(expected, rel=1e-6)
    # one step at learning rate 0 (warm-up starts at 0) leaves the weights, so the final bound (same keys) is equal
    assert res["test_bound_bpd"] == pytest.approx(expected, rel=1e-6)
    # with uniform x0 logits the reconstruction term alone is -log2 p(x_0 | x_1) = log2(17) per pixel; the prior
    # term and the T - 1 KL terms are >= 0
    assert expected > math.log2(17)
    samples = np.load(os.path.join(run, "samples.npy"))
    assert samples.shape == (4, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 16

    assert main(["info", run]) == 0
    info = capsys.readouterr().out
    assert "checkpoints [1]" in info and "transition=gaussian" in info and "test_bound_bpd" in info
    # with the defaults, `sample` draws training's samples again: the same picture, byte for byte
    assert main(["sample", run]) == 0
    for ext in (".png", ".npy"):
        assert (
            open(os.path.join(run, "samples_step000001" + ext), "rb").read()
            == open(os.path.join(run, "samples" + ext), "rb").read()
        )
    assert main(["sample", run, "--num-samples", "4", "--seed", "3"]) == 0
    capsys.readouterr()
    assert np.load(os.path.join(run, "samples_step000001_seed3.npy")).shape == (4, 1, 8, 8)
    assert os.path.getsize(os.path.join(run, "samples_step000001_seed3.png")) > 0
    cli_exits_2(capsys, ["nll", run], f"RUN {run!r} is a D3PM run", "test_bound_bpd")
    cli_exits_2(capsys, ["sample", run, "--sampler", "ddim"], "--sampler ddim", "does not apply to the D3PM run")
    cli_exits_2(capsys, ["train", "--model", "d3pm", "--out", run], "already holds a run", "--resume")


def test_defaults_are_the_measured_best():
    # absorbing, T = 50 (benchmarks/results/d3pm.md), hybrid coefficient 0.001 T, no step-0 bound unless asked
    from scoreflow._cli.main import parser

    c = d3pm.D3PM_FAMILY.config_from_args(parser().parse_args(["train", "--model", "d3pm"]))
    assert (c["transition"], c["timesteps"], c["hybrid_coeff"], c["initial_bound"]) == ("absorbing", 50, None, False)
    d3pm._resolve(c, sfd.load_digits())
    assert c["hybrid_coeff"] == pytest.approx(0.05)


def test_binary_digits_are_thresholded_digits():
    # same images and split as the 17-level digits, level 1 where the grey level is >= 8
    grey, binary = sfd.load_digits(), sfd.load_binary_digits()
    assert binary.num_levels == 2 and binary.name == "digits-binary"
    for split in ("train", "test"):
        assert np.array_equal(binary.levels(split), (grey.levels(split) >= 8).astype(np.int64))
    # add-one categorical baseline by hand for pixel (0, 3, 4): p(1) = (n_1 + 1) / (N + 2)
    tr, te = binary.levels("train")[:, 0, 3, 4], binary.levels("test")[:, 0, 3, 4]
    p1 = (tr.sum() + 1.0) / (len(tr) + 2.0)
    bits = -np.mean(np.where(te == 1, np.log2(p1), np.log2(1.0 - p1)))
    counts = np.stack([(binary.levels("train") == v).sum(0) for v in (0, 1)]) + 1.0
    logp = np.log2(counts / (len(binary.train) + 2.0))
    k = binary.levels("test")
    per_pixel = -np.mean(np.where(k == 1, logp[1], logp[0]), axis=0)
    assert per_pixel[0, 3, 4] == pytest.approx(bits, rel=1e-12)
    assert sfd.categorical_bits_per_dim(binary) == pytest.approx(per_pixel.mean(), rel=1e-12)


def test_text_run_writes_characters(tmp_path, capsys):
    run = str(tmp_path / "text")
    L, T, n_eval = 12, 2, 3
    argv = [
        "train",
        "--model",
        "d3pm",
        "--data",
        "text",
        "--seq-len",
        str(L),
        "--timesteps",
        str(T),
        "--width",
        "8",
        "--depth",
        "1",
        "--eval-examples",
        str(n_eval),
        "--num-samples",
        "3",
        "--out",
        run,
        *TINY,
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "bits/char" in out and "at step 0" not in out
    cfg = json.load(open(os.path.join(run, "config.json")))
    assert cfg["config"]["transition"] == "absorbing"  # the default for characters
    assert cfg["data"]["alphabet"] == sf.TEXT8_ALPHABET and cfg["transition"]["num_states"] == 28
    lines = open(os.path.join(run, "samples.txt")).read().split("\n")
    assert lines[-1] == "" and len(lines) == 4
    assert all(len(s) == L and set(s) <= set(sf.TEXT8_ALPHABET) for s in lines[:3])
    ids = np.load(os.path.join(run, "samples.npy"))
    assert sf.text8_decode(ids[0]) == lines[0]

    # no step-0 bound unless asked (--initial-bound); the final bound equals d3pm_bound_bpd of the (unchanged,
    # lr 0) restored transformer on the same subset
    rec = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl"))]
    assert [r["step"] for r in rec] == [1, 1] and "test_bound_bpd" in rec[1]
    _, _, ds, transition, state = d3pm.load_run(run)
    levels = sfd.load_text(L).levels("test")[:n_eval].astype(np.int32)
    assert np.array_equal(levels[0], sf.text8_encode(sf.text8_decode(levels[0])))
    assert rec[1]["test_bound_bpd"] == pytest.approx(_direct_bound(state.model, transition, levels, 0), rel=1e-6)
    res = json.load(open(os.path.join(run, "results.json")))
    assert res["initial_test_bound_bpd"] is None
    assert res["baselines_bpd"]["categorical"] == pytest.approx(sfd.categorical_bits_per_dim(ds), rel=1e-12)


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["train", "--model", "foo"], ["--model", "'foo'", "choose from"]),
        (["train", "--model", "d3pm", "--transition", "foo"], ["--transition", "'foo'", "choose from"]),
        (["train", "--model", "d3pm", "--timesteps", "0"], ["--timesteps", "'0'", "positive integer"]),
        (["train", "--model", "d3pm", "--hybrid-coeff", "-1"], ["--hybrid-coeff", "'-1'", ">= 0"]),
        (
            ["train", "--model", "d3pm", "--data", "text", "--transition", "gaussian"],
            ["--transition gaussian needs ordinal data", "--data text"],
        ),
        (["train", "--model", "d3pm", "--data", "toy:ring8"], ["--model d3pm needs discrete data", "toy:ring8"]),
        (["train", "--model", "d3pm", "--sde", "ve"], ["--sde ve does not apply to --model d3pm"]),
        (["train", "--transition", "uniform"], ["--transition uniform does not apply to --model continuous"]),
        (["train", "--data", "text", "--network", "mlp", "--loss", "dsm"], ["--data text", "need --model d3pm"]),
        (
            ["train", "--model", "d3pm", "--data", "text8:/nonexistent/text8"],
            ["--data 'text8:/nonexistent/text8'", "not found"],
        ),
        (["train", "--model", "d3pm", "--data", "text", "--width", "12"], ["--width 12", "multiple of 8"]),
    ],
)
def test_bad_values_exit_2_naming_option_and_value(capsys, tmp_path, argv, needles):
    cli_exits_2(capsys, [*argv, "--out", str(tmp_path / "r")], *needles)
