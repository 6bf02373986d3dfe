"""The `scoreflow` command: bad values exit with code 2 naming the option, and a tiny main job writes a full
run folder whose numbers match the closed forms for an untrained (zero-output) network."""

import json
import math
import os

import numpy as np
import pytest

from scoreflow._cli.main import main

from .helpers import cli_exits_2


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["train", "--steps", "0"], ["--steps", "'0'", "positive integer"]),
        (["train", "--batch-size", "many"], ["--batch-size", "'many'"]),
        (["train", "--lr", "-1"], ["--lr", "'-1'"]),
        (["train", "--ema-decay", "1.5"], ["--ema-decay", "'1.5'", "[0, 1)"]),
        (["train", "--sde", "foo"], ["--sde", "'foo'", "choose from"]),
        (["train", "--schedule", "quadratic"], ["--schedule", "'quadratic'"]),
        (["train", "--channels", "32,x"], ["--channels", "'32,x'"]),
        (["train", "--bits", "17"], ["--bits", "'17'", "1..16"]),
        (["nll", "somewhere", "--divergence", "magic"], ["--divergence", "'magic'"]),
        (["nll", "somewhere", "--rtol", "0"], ["--rtol", "'0'"]),
        (["sample", "somewhere", "--sampler", "fast"], ["--sampler", "'fast'"]),
        (["train", "--loss", "vdm", "--sde", "ve"], ["--loss vdm needs --sde vp", "--sde ve"]),
        (
            ["train", "--data", "toy:ring8", "--loss", "dsm"],
            ["--network unet needs square images", "toy:ring8", "(2,)", "use --network mlp, which takes vectors"],
        ),
        (
            ["train", "--network", "mlp"],
            ["--network mlp needs vectors", "(1, 8, 8)", "use --network unet, which takes square images"],
        ),
        (["train", "--gamma-min", "nan"], ["--gamma-min", "'nan'", "a finite number"]),
        (["nll", "somewhere", "--num-examples", "0"], ["--num-examples", "'0'", "positive integer"]),
        (["sample", "somewhere", "--seed", "-1"], ["--seed", "'-1'", "integer >= 0"]),
        (["train", "--data", "toy:moons"], ["--data 'toy:moons'", "unknown toy mixture 'moons'"]),
        (["train", "--channels", "12"], ["--channels 12", "multiples of 8"]),
        (["train", "--data", "/nonexistent/x.npy"], ["--data '/nonexistent/x.npy'", "no such file"]),
        (["info", "/nonexistent/run"], ["RUN '/nonexistent/run'", "not a run folder"]),
    ],
)
def test_bad_values_exit_2_naming_option_and_value(capsys, argv, needles):
    cli_exits_2(capsys, argv, *needles)


def test_bad_data_file_named(capsys, tmp_path):
    p = tmp_path / "bad.npy"
    np.save(p, np.array([[0.0, np.nan], [1.0, 2.0]]))
    cli_exits_2(capsys, ["train", "--data", str(p), "--network", "mlp", "--loss", "dsm"], str(p), "NaN")
    q = tmp_path / "deep.npy"
    np.save(q, np.full((4, 8, 8), 300))
    cli_exits_2(capsys, ["train", "--data", str(q), "--bits", "8"], str(q), "outside [0, 255]")


def test_non_square_images_hint_points_somewhere_useful(capsys, tmp_path):
    # the unet and mlp messages must not send the user to each other in a loop
    p = tmp_path / "wide.npy"
    np.save(p, np.zeros((10, 8, 6), np.int64))
    cli_exits_2(capsys, ["train", "--data", str(p)], "--network unet needs square images", "crop or pad them to square")
    cli_exits_2(
        capsys,
        ["train", "--data", str(p), "--network", "mlp", "--loss", "dsm"],
        "--network mlp needs vectors",
        "flatten them to vectors (N, D)",
    )


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in (
        "--data",
        "--bits",
        "--network",
        "--parameterisation",
        "--sde",
        "--schedule",
        "--loss",
        "--weighting",
        "--gamma-min",
        "--steps",
        "--batch-size",
        "--seed",
        "--out",
        "--resume",
        "--solver",
        "--divergence",
        "--sampler",
    ):
        assert opt in out
    assert "digits" in out and "vdm" in out and "toy:NAME" in out


def test_tiny_main_job_writes_run_folder(tmp_path, capsys):
    run = str(tmp_path / "run")
    # One step with lr 0 (warm-up starts at 0): the network keeps its zero-initialised output, so eps_hat = 0
    # and every number below has a closed form.
    argv = [
        "train",
        "--out",
        run,
        "--steps",
        "1",
        "--warmup",
        "1",
        "--channels",
        "8",
        "--batch-size",
        "8",
        "--schedule-hidden",
        "4",
        "--eval-repeats",
        "4",
        "--nll-examples",
        "0",
        "--num-samples",
        "4",
        "--sampler",
        "ddim",
        "--sample-steps",
        "3",
        "--no-progress",
        "--checkpoint-every",
        "1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "test VLB" in out
        and "per-pixel categorical" in out
        and "pf" not in json.load(open(os.path.join(run, "results.json")))
    )
    for name in (
        "config.json",
        "metrics.jsonl",
        "results.json",
        "samples.png",
        "curves.png",
        "schedule.png",
        "samples.npy",
        os.path.join("checkpoints", "step_00000001.ckpt"),
    ):
        assert os.path.getsize(os.path.join(run, name)) > 0, name
    cfg = json.load(open(os.path.join(run, "config.json")))
    assert cfg["config"]["loss"] == "vdm" and cfg["data"]["num_levels"] == 17
    rec = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert [r["step"] for r in rec] == [1]
    res = json.load(open(os.path.join(run, "results.json")))
    # VLB of a zero network with gamma(0) = -8, gamma(1) = 5 (the defaults): the diffusion term is
    # E[gamma'(t)] |eps|^2 / (2 d ln 2) -> (5 + 8) / (2 ln 2) = 9.38 bits/dim; prior and reconstruction add
    # about 0.005 and 0.001. Monte Carlo over 297 x 4 draws: |eps|^2/d has sd 0.18, so 2% is > 5 standard errors.
    assert (cfg["config"]["gamma_min"], cfg["config"]["gamma_max"]) == (-8.0, 5.0)
    assert res["test_vlb_bpd"] == pytest.approx(13.0 / (2 * math.log(2)), rel=0.02)
    assert res["baselines_bpd"]["categorical"] == pytest.approx(2.4221, abs=1e-3)
    assert np.load(os.path.join(run, "samples.npy")).shape == (4, 1, 8, 8)

    # `nll` with uniform dequantisation: a zero score makes the probability-flow ODE linear, so the model's
    # density at t0 is N(0, s^2 I) with s = alpha(t0)/alpha(1); with bin width h = 2/16 the bits/dim are
    # [0.5 log(2 pi s^2) + E(x^2)/(2 s^2)] / ln 2 - log2(h), E over bins of (centre^2 + h^2/12).
    assert (
        main(["nll", run, "--dequantisation", "uniform", "--num-examples", "3", "--rtol", "1e-6", "--atol", "1e-6"])
        == 0
    )
    capsys.readouterr()
    r = json.loads(open(os.path.join(run, "nll.jsonl")).read().splitlines()[-1])
    import scoreflow.data as sfd
    from scoreflow._cli.continuous import build_model

    sde = build_model(cfg["config"], (1, 8, 8)).sde
    s2 = float(sde.alpha_sigma(sde.t0)[0] ** 2 / sde.alpha_sigma(1.0)[0] ** 2)
    h = 2.0 / 16
    x = sfd.load_digits().test[:3].astype(np.float64)
    ex2 = np.mean(x**2) + h**2 / 12
    expected = (0.5 * math.log(2 * math.pi * s2) + ex2 / (2 * s2)) / math.log(2) - math.log2(h)
    assert r["bpd"] == pytest.approx(expected, abs=2e-3)

    assert main(["info", run]) == 0
    info = capsys.readouterr().out
    assert "checkpoints [1]" in info and "test_vlb_bpd" in info
    cli_exits_2(capsys, ["train", "--out", run], "already holds a run", "--resume")


@pytest.mark.parametrize("model", ["continuous", "d3pm"])
def test_unet_levels_checked_alike_in_both_families(model, tmp_path, capsys):
    for flag, value, expected in (
        ("--channels", "12,24", "--channels 12,24: needs multiples of 8, one per level"),
        ("--attention", "3", "--attention 3: resolutions must be among [8, 4]"),
    ):
        with pytest.raises(SystemExit) as e:
            main(["train", "--model", model, flag, value, "--steps", "1", "--out", str(tmp_path / flag)])
        assert e.value.code == 2 and expected in capsys.readouterr().err
