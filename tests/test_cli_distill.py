"""`scoreflow distill RUN`: a new run folder with one checkpoint folder per halving (each recording its grid),
progress lines, `sample` and `info` on the result, Ctrl-C with a checkpoint and `--resume`, clear refusals."""

import contextlib
import io
import json
import os
import shutil
import signal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf
from scoreflow import train as sft
from scoreflow._cli import main as cli_main
from scoreflow._cli.interrupt import Interrupts
from scoreflow._cli.main import main


TEACHER = [
    "--data",
    "toy:ring8",
    "--network",
    "mlp",
    "--width",
    "16",
    "--depth",
    "1",
    "--loss",
    "dsm",
    "--schedule",
    "cosine",
    "--batch-size",
    "16",
    "--nll-examples",
    "0",
    "--num-samples",
    "4",
    "--sampler",
    "ddim",
    "--sample-steps",
    "2",
    "--no-progress",
    "--steps",
    "4",
]
DISTILL = ["--steps", "1", "--start-steps", "4", "--train-steps", "2", "--batch-size", "8", "--num-samples", "4"]


def _main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "teacher")
    assert _main(["train", *TEACHER, "--out", run])[0] == 0
    return run


def _fails(capsys, argv, *needles):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"scoreflow {argv[0]}: error: "), last
    for n in needles:
        assert n in last, (n, last)


def test_distill_sample_info(teacher, tmp_path, capsys):
    out = str(tmp_path / "student")
    code, stdout, err = _main(["distill", teacher, *DISTILL, "--out", out, "--no-progress"])
    assert code == 0, err
    for line in ("compiling halving 4 -> 2 steps", "training halving 2 -> 1 steps", "evaluating: drawing 4 samples"):
        assert line in err, err
    results = json.load(open(os.path.join(out, "results.json")))
    assert [(s["teacher_steps"], s["steps"], s["train_steps"]) for s in results["stages"]] == [(4, 2, 2), (2, 1, 2)]
    assert 0 <= results["paired_rmse_vs_teacher"] < 10
    # each halving's checkpoint records its grid: that of the teacher's SDE
    sde = sf.VPSDE(sf.CosineSchedule(-8.0, 5.0))
    for n in (2, 1):
        (_, path), *_ = sft.list_checkpoints(os.path.join(out, "checkpoints", f"steps_{n:05d}"))
        grid = sft.read_header(path)["metadata"]["grid"]
        assert sf.DistillationGrid.from_dict(grid) == sf.DistillationGrid.of(sde, n)

    # `sample RUN` with no options draws what distill drew, bit for bit
    code, stdout, _ = _main(["sample", out, "--no-progress"])
    assert code == 0 and "1 steps" in stdout
    np.testing.assert_array_equal(np.load(os.path.join(out, "samples_1steps.npy")), np.load(f"{out}/samples.npy"))
    _fails(capsys, ["sample", out, "--sample-steps", "4"], "--sample-steps 4 does not apply to the distilled run")
    _fails(capsys, ["sample", out, "--guidance-w", "1"], "was not distilled with guidance")
    _fails(capsys, ["nll", out], "has no likelihood of its own")

    code, stdout, _ = _main(["info", out])
    assert code == 0 and "stage steps_00001" in stdout and f"teacher     {os.path.abspath(teacher)}" in stdout


def test_distill_refusals(teacher, tmp_path, capsys):
    out = str(tmp_path / "x")
    _fails(capsys, ["distill", teacher, "--steps", "3", "--start-steps", "8", "--out", out], "power of 2")
    _fails(capsys, ["distill", teacher, "--guidance-range", "0,4", "--out", out], "is unconditional")
    _fails(capsys, ["distill", teacher, "--guidance-w", "2", "--out", out], "needs --guidance-range")
    _fails(capsys, ["distill", "--resume", "--out", out], "nothing to resume")
    assert not os.path.exists(os.path.join(out, "config.json"))


class _CtrlCWhileTraining(Interrupts):
    """A Ctrl-C that arrives as soon as the first training stretch starts (in-process, no subprocess)."""

    def set_training(self, on: bool) -> None:
        super().set_training(on)
        if on and self.requested is None:
            self.on_signal(signal.SIGINT)


def test_distill_ctrl_c_then_resume(teacher, tmp_path, monkeypatch):
    out = str(tmp_path / "student")
    monkeypatch.setattr(cli_main, "Interrupts", _CtrlCWhileTraining)
    code, _, err = _main(["distill", teacher, *DISTILL, "--out", out, "--no-progress"])
    assert code == 130, err
    assert "SIGINT received: stopping after this step" in err and "stopped by SIGINT" in err
    assert f"continue with: scoreflow distill --resume --out {out}" in err
    assert sft.list_checkpoints(os.path.join(out, "checkpoints", "steps_00002"))  # written on the way out
    assert not os.path.exists(os.path.join(out, "results.json"))
    monkeypatch.setattr(cli_main, "Interrupts", Interrupts)
    shutil.copy(os.path.join(out, "config.json"), tmp_path / "config_before.json")
    code, stdout, err = _main(["distill", "--resume", "--out", out, "--no-progress"])
    assert code == 0, err
    assert "resuming" in err and "2 -> 1" in stdout
    assert json.load(open(os.path.join(out, "config.json"))) == json.load(open(tmp_path / "config_before.json"))


COND_TEACHER = [
    "--data", "digits", "--cond", "class", "--channels", "16", "--loss", "dsm", "--schedule", "cosine",
    "--batch-size", "8", "--nll-examples", "0", "--eval-repeats", "1", "--num-samples", "2", "--sampler", "ddim",
    "--sample-steps", "2", "--no-progress", "--steps", "2", "--lr", "0.01", "--warmup", "0", "--ema-decay", "0",
]  # fmt: skip
GUIDED = ["--guidance-range", "0,4", "--guidance-train-steps", "3", "--train-steps", "2", "--steps", "1",
          "--start-steps", "2", "--batch-size", "4", "--num-samples", "4", "--lr", "0.01", "--no-progress"]  # fmt: skip


def test_distill_guidance_range_end_to_end(tmp_path, capsys, monkeypatch):
    """`distill --guidance-range` on a class-conditional digits run (tiny U-Net, 3 + 2 steps, float32 as the
    command runs): stage 1 and the halving checkpoint with the range, the samples are `DistilledDDIM` of the
    restored w-conditioned student at (labels, w = the range's middle), the recorded paired RMSE is against the
    classifier-free-guided teacher at weight 1 + w (a guidance off by one changes it), and `sample --guidance-w`
    draws at another w or refuses one outside the range. 16 channels: with 8 channels in GroupNorm's 8 groups the
    norm cancels the label embedding's per-channel shift, and the network could see neither the label nor w."""
    import scoreflow.metrics as sfm
    from scoreflow._cli import continuous, distilled

    # an untrained classifier stands in for the cached one (train's digit metrics; test_metrics.py checks it)
    monkeypatch.setattr(sfm, "digit_classifier", lambda **kw: sfm.DigitClassifier(key=jax.random.key(0)))
    with jax.enable_x64(False):
        teacher_run, out = str(tmp_path / "cond"), str(tmp_path / "guided")
        assert _main(["train", *COND_TEACHER, "--out", teacher_run])[0] == 0
        code, stdout, err = _main(["distill", teacher_run, *GUIDED, "--out", out])
        assert code == 0, err
        assert "compiling guided stage 1 (w in [0, 4], 3 steps)" in err and "CFG w = 2" in stdout, (stdout, err)
        c = json.load(open(os.path.join(out, "config.json")))["config"]
        assert (c["guidance_range"], c["guidance_w"], c["guidance_train_steps"]) == ([0.0, 4.0], 2.0, 3)
        results = json.load(open(os.path.join(out, "results.json")))
        assert results["guided"]["train_steps"] == 3
        assert [(s["teacher_steps"], s["steps"]) for s in results["stages"]] == [(2, 1)]
        stages = {json.loads(line)["stage"] for line in open(os.path.join(out, "metrics.jsonl"))}
        assert stages == {"guided", "steps_00001"}, stages
        for stage, step in (("guided", 3), ("steps_00001", 2)):
            (got_step, path), *_ = sft.list_checkpoints(os.path.join(out, "checkpoints", stage))
            assert got_step == step and sft.read_header(path)["metadata"]["guidance_range"] == [0.0, 4.0]

        # the samples: the restored student, DistilledDDIM on its 1-step grid, conditioning (labels, w = 2)
        teacher, _, _, _ = distilled.teacher_model({"teacher": teacher_run}, exact_step=False)
        student = sf.restore_student(
            os.path.join(out, "checkpoints", "steps_00001"), sf.guidance_student(teacher, key=jax.random.key(0))
        )
        assert student.grid == sf.DistillationGrid.of(teacher.sde, 1)
        key, labels = continuous.sample_key(c["seed"]), jnp.arange(4) % 10
        samples = np.load(os.path.join(out, "samples.npy"))

        @eqx.filter_jit
        def library(w):
            return sf.sample(
                student, student.sde, key, (4, 1, 8, 8), sf.DistilledDDIM(student), cond=(labels, w)
            ).samples

        @eqx.filter_jit
        def rmse_to_cfg(weight):
            cfg = sf.ClassifierFreeGuidance(teacher, None, 10, sf.Constant(weight))
            res = sf.sample(cfg, cfg.sde, key, (4, 1, 8, 8), sf.DDIM(steps=2), cond=labels)
            return jnp.sqrt(jnp.mean((samples - res.samples) ** 2))

        at_w0 = np.asarray(library(jnp.zeros(4)))
        np.testing.assert_allclose(samples, library(jnp.full(4, 2.0)), rtol=1e-5, atol=1e-4)
        assert np.abs(at_w0 - samples).max() > 1e-2  # w reaches the student: another w, other samples
        # the paired RMSE is against the guided teacher at weight 1 + w, DDIM on --start-steps steps, same draws
        rmse = float(rmse_to_cfg(jnp.asarray(3.0)))
        assert results["paired_rmse_vs_teacher"] == pytest.approx(rmse, rel=1e-4)
        assert abs(float(rmse_to_cfg(jnp.asarray(2.0))) - rmse) > 1e-3 * rmse

        # sample at another w inside the range: that w's samples; outside it: refused, naming the range
        code, stdout, _ = _main(["sample", out, "--guidance-w", "0", "--no-progress"])
        assert code == 0 and "1 steps" in stdout
        np.testing.assert_allclose(np.load(os.path.join(out, "samples_1steps_w0.npy")), at_w0, rtol=1e-5, atol=1e-4)
        code, stdout, _ = _main(["info", out])
        assert code == 0 and "stage guided" in stdout and "stage steps_00001" in stdout
        capsys.readouterr()
        _fails(capsys, ["sample", out, "--guidance-w", "5"],
               "--guidance-w 5: the student was distilled for w in [0, 4] (--guidance-range 0,4)")  # fmt: skip
        _fails(capsys, ["distill", teacher_run, *GUIDED, "--guidance-w", "5", "--out", str(tmp_path / "x")],
               "--guidance-w 5.0: expected a value in --guidance-range 0,4")  # fmt: skip
        _fails(capsys, ["distill", teacher_run, "--guidance-train-steps", "3", "--out", str(tmp_path / "y")],
               "--guidance-train-steps 3 needs --guidance-range")  # fmt: skip
