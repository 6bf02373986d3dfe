"""Run folders: config.json bound to the checkpoints, corrupt configs named, outputs that never overwrite,
cumulative times after --resume, read-only folders refused, stale temporaries cleaned at the start of a run."""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from scoreflow._cli.main import main
from scoreflow._cli.registry import FAMILIES


TINY = [
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
    "--log-every",
    "1",
    "--checkpoint-every",
    "2",
    "--nll-examples",
    "3",
    "--num-samples",
    "8",
    "--sampler",
    "ddim",
    "--sample-steps",
    "2",
    "--no-progress",
]


@pytest.fixture(scope="module")
def trained_with_output(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "run")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["train", *TINY, "--steps", "4", "--out", run]) == 0
    return run, out.getvalue(), err.getvalue()


@pytest.fixture
def run(trained_with_output, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(trained_with_output[0], copy)
    return copy


def _fails(capsys, argv, *needles):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # one line says it all (a "resuming ..." note may come before)
    assert last.startswith(f"scoreflow {argv[0]}: error: "), err
    for n in needles:
        assert n in last, (n, err)
    return err


def _edit(run, **changes):
    p = os.path.join(run, "config.json")
    cfg = json.load(open(p))
    cfg["config"].update(changes)
    json.dump(cfg, open(p, "w"))


def test_config_edit_that_changes_the_model_is_refused(run, capsys):
    _edit(run, parameterisation="x0", sde="subvp")
    needles = ["config.json does not match", "step_00000004.ckpt", "parameterisation: eps -> x0", "sde: vp -> subvp"]
    _fails(capsys, ["sample", run], *needles)
    _fails(capsys, ["nll", run], *needles)
    _fails(capsys, ["train", "--resume", "--out", run], *needles)


@pytest.mark.parametrize(
    "text, needle",
    [
        ('{"config": {"steps": 4,', "config.json: not valid JSON (Expecting property name enclosed in double quotes"),
        ('{"config": []}', 'config.json: expected a JSON object with a "config" object'),
        ("[]", 'config.json: expected a JSON object with a "config" object'),
    ],
)
def test_unreadable_config_named(run, capsys, text, needle):
    open(os.path.join(run, "config.json"), "w").write(text)
    for command in ("info", "sample", "nll"):
        _fails(capsys, [command, run], os.path.join(run, needle))


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"steps": "12"}, "config.steps = '12': expected a positive integer (as for --steps)"),
        ({"lr": -1}, "config.lr = -1: expected a positive number (as for --lr)"),
        ({"sde": "foo"}, "config.sde = 'foo': expected one of edm, subvp, ve, vp (as for --sde)"),
        ({"channels": [32, "x"]}, "config.channels = [32, 'x']: expected comma-separated positive integers"),
        ({"model": "gan"}, "config.model = 'gan': expected one of " + str(sorted(FAMILIES))),
    ],
)
def test_bad_config_values_named(run, capsys, change, needle):
    _edit(run, **change)
    _fails(capsys, ["info", run], os.path.join(run, "config.json") + ": " + needle)


def test_info_without_the_data_section(run, capsys):
    p = os.path.join(run, "config.json")
    cfg = json.load(open(p))
    del cfg["data"], cfg["parameters"]
    json.dump(cfg, open(p, "w"))
    assert main(["info", run]) == 0
    assert "data        ? ?, ? train / ? test" in capsys.readouterr().out


def test_missing_config_key_named(run, capsys):
    p = os.path.join(run, "config.json")
    cfg = json.load(open(p))
    del cfg["config"]["batch_size"]
    json.dump(cfg, open(p, "w"))
    _fails(capsys, ["train", "--resume", "--out", run], f"{p}: config.batch_size is missing")


def test_sample_outputs_named_by_step_never_overwritten(run, capsys):
    assert main(["sample", run, "--num-samples", "4"]) == 0
    first = os.path.join(run, "samples_step000004")
    assert os.path.isfile(first + ".png") and os.path.isfile(first + ".npy")
    before = open(first + ".png", "rb").read()
    assert main(["sample", run, "--num-samples", "4"]) == 0
    err = capsys.readouterr().err
    assert f"{first}.png exists (not overwritten): writing {first}_2.png instead" in err
    assert open(first + ".png", "rb").read() == before and os.path.isfile(first + "_2.npy")
    assert main(["sample", run, "--num-samples", "4", "--seed", "5"]) == 0  # another seed: named by it too
    assert os.path.isfile(os.path.join(run, "samples_step000004_seed5.png"))
    _fails(capsys, ["sample", run, "--output", first + ".png"], f"--output {first + '.png'!r}", "refusing to overwrite")
    # after a fallback to an older checkpoint (the newest damaged), the output says which step it came from
    with open(os.path.join(run, "checkpoints", "step_00000004.ckpt"), "r+b") as f:
        f.truncate(100)
    with pytest.warns(UserWarning, match="skipping unusable checkpoint"):
        assert main(["sample", run, "--num-samples", "4"]) == 0
    assert "step 2)" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(run, "samples_step000002.png"))


def test_resume_reports_session_and_total_with_cumulative_time(run, capsys):
    first = json.load(open(os.path.join(run, "results.json")))
    assert (first["steps"], first["steps_this_session"]) == (4, 4)
    _edit(run, steps=8, nll_examples=0)  # not model-defining keys: a longer run of the same model
    capsys.readouterr()
    assert main(["train", "--resume", "--out", run]) == 0
    out = capsys.readouterr().out
    r = json.load(open(os.path.join(run, "results.json")))
    assert (r["steps"], r["steps_this_session"]) == (8, 4)
    assert r["train_seconds"] > r["train_seconds_this_session"] > 0
    assert re.search(r"trained 4 steps in [\d.]+ s this session \(steps 4 -> 8; wall [\d.]+ s\); 8 steps in", out)
    rec = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl"))]
    assert [x["step"] for x in rec] == list(range(1, 9))
    times = [x["time"] for x in rec]
    assert times == sorted(times) and times[4] >= times[3]  # step 5 continues from step 4's time


def test_read_only_run_folder_refused(run, capsys):
    os.chmod(os.path.join(run, "checkpoints"), 0o555)
    os.chmod(run, 0o555)
    try:
        _fails(capsys, ["train", "--resume", "--out", run], f"--out {run!r}", "is read-only")
        _fails(capsys, ["sample", run], f"RUN {run!r}", "is read-only")
    finally:
        os.chmod(run, 0o755)
        os.chmod(os.path.join(run, "checkpoints"), 0o755)


def test_out_and_output_paths_checked(run, capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _fails(capsys, ["train", *TINY, "--out", str(afile)], f"--out {str(afile)!r}: exists and is not a folder")
    bad = str(tmp_path / "nowhere" / "x.png")
    _fails(capsys, ["sample", run, "--output", bad], f"--output {bad!r}: the folder", "does not exist")


def test_stale_temporary_removed_at_start(run, capsys):
    from scoreflow.train.checkpoint import _host_tag

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = os.path.join(run, "checkpoints", f".step_00000006.ckpt.{_host_tag()}.{dead.pid}.0123456789abcdef.tmp")
    open(stale, "wb").write(b"x" * 1000)
    _edit(run, steps=6, nll_examples=0)
    assert main(["train", "--resume", "--out", run]) == 0
    assert f"removed {stale} (left by a save that was killed)" in capsys.readouterr().err
    assert not os.path.exists(stale)


def test_train_says_each_phase_and_lists_every_file_it_wrote(trained_with_output):
    run, out, err = trained_with_output
    phases = [
        "compiling the training step",
        "compiled in",
        "evaluating the probability-flow likelihood of 3 test example(s) (exact trace, tsit5, rtol=0.001)",
        "drawing 8 samples (ddim, 2 steps; compiling first)",
    ]
    at = [err.index(p) for p in phases]
    assert at == sorted(at), err
    listed = out.strip().splitlines()[-1]
    assert listed.startswith("wrote ")
    files = {os.path.join(d, n) for d, _, ns in os.walk(run) for n in ns}
    assert set(listed[len("wrote ") :].split(", ")) == files
    assert {os.path.relpath(f, run) for f in files} >= {"config.json", "results.json", "samples.png", "curves.png"}


def test_sample_with_defaults_redraws_the_training_picture(run, capsys):
    assert main(["sample", run]) == 0
    assert "(8 samples, step 4)" in capsys.readouterr().out
    for ext in (".png", ".npy"):
        new = open(os.path.join(run, "samples_step000004" + ext), "rb").read()
        assert new == open(os.path.join(run, "samples" + ext), "rb").read(), ext


def test_nll_with_training_settings_prints_the_training_number(trained_with_output, run, capsys):
    _, out, _ = trained_with_output
    trained = json.load(open(os.path.join(run, "results.json")))["pf"]
    printed = re.search(r"probability-flow NLL \(ODE\) +(\S+) nats", out).group(1)
    assert main(["nll", run, "--num-examples", "3"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{printed} nats NLL (+- ")
    again = json.loads(open(os.path.join(run, "nll.jsonl")).read().splitlines()[-1])
    assert again["nll_nats"] == trained["nll_nats"] and again["examples"] == 3 and again["seed"] == 0
    # example i's number does not depend on how many are evaluated: the first 3 of 5 are the same
    assert main(["nll", run, "--num-examples", "1"]) == 0
    one = json.loads(open(os.path.join(run, "nll.jsonl")).read().splitlines()[-1])
    assert one["nll_nats_stderr_over_examples"] is None and "no standard error" in capsys.readouterr().out


def test_three_examples_warn_and_print_no_nan(tmp_path, capsys):
    data = tmp_path / "three.npy"
    np.save(data, np.array([[10, 200], [30, 40], [250, 7]]))
    run = str(tmp_path / "run")
    argv = ["train", *TINY, "--data", str(data), "--steps", "2", "--nll-examples", "4", "--out", run]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"warning: --data {str(data)!r} has only 2 training and 1 test example(s): too few" in captured.err
    assert "nan" not in captured.out.lower() and "no standard error, 1 test images" in captured.out
    res = json.load(open(os.path.join(run, "results.json")))
    assert res["pf"]["bpd_stderr_over_examples"] is None
