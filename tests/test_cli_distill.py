"""`scoreflow distill RUN`: a new run folder with one checkpoint folder per halving (each recording its grid),
progress lines, `sample` and `info` on the result, Ctrl-C with a checkpoint and `--resume`, clear refusals."""

import contextlib
import io
import json
import os
import shutil
import signal

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
