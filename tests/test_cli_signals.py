"""Ctrl-C and SIGTERM stop `scoreflow train` cleanly: at the next step boundary with a checkpoint that resumes,
exit code 128 + signal (130 / 143); a second signal, or one outside training, exits at once with one line."""

import json
import os
import signal
import subprocess
import sys
import time

from scoreflow._cli.interrupt import Interrupts


TINY = [
    "train",
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
    "--steps",
    "1000000",  # never reached: the signal ends the run
    "--log-every",
    "5",
    "--checkpoint-every",
    "1000000",
    "--nll-examples",
    "0",
    "--no-progress",
]


def test_signal_logic():
    lines, exits = [], []
    intr = Interrupts("train", write=lines.append, exit=exits.append)
    intr.on_signal(signal.SIGINT)  # during setup: exit at once, one line
    assert exits == [130] and len(lines) == 1 and "interrupted by SIGINT during setup" in lines[0]

    lines.clear(), exits.clear()
    intr = Interrupts("train", write=lines.append, exit=exits.append)
    intr.set_training(True)
    intr.on_signal(signal.SIGTERM)  # first signal while training: a stop request only
    assert exits == [] and intr.requested == signal.SIGTERM and intr.signal_name == "SIGTERM"
    assert "stopping after this step and writing a checkpoint" in lines[0]
    intr.on_signal(signal.SIGINT)  # second: at once
    assert exits == [130] and "second SIGINT: exiting at once" in lines[1]


def _start(args):
    return subprocess.Popen(
        [sys.executable, "-m", "scoreflow._cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_metrics(proc, path, more_than=0, timeout=120):
    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"exited early with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        if os.path.exists(path):
            recs = [json.loads(x) for x in open(path).read().splitlines() if x.strip()]
            if recs and recs[-1]["step"] > more_than:
                return recs
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("no metrics line in time")


def _stop(proc, sig):
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    return proc.returncode, out, err


def _stopped_at(err, name):
    line = next(x for x in err.splitlines() if f"stopped by {name} at step" in x)
    return int(line.split("at step ")[1].split()[0]), line.split("checkpoint written: ")[1].strip()


def test_sigint_then_sigterm_stop_with_checkpoint_and_resume(tmp_path):
    run = str(tmp_path / "run")
    metrics = os.path.join(run, "metrics.jsonl")
    proc = _start([*TINY, "--out", run])
    _wait_for_metrics(proc, metrics)
    code, _, err = _stop(proc, signal.SIGINT)
    assert code == 130, err[-3000:]
    step, path = _stopped_at(err, "SIGINT")
    assert step >= 5 and path == os.path.join(run, "checkpoints", f"step_{step:08d}.ckpt") and os.path.isfile(path)
    assert f"scoreflow train --resume --out {run}" in err

    proc = _start(["train", "--resume", "--out", run, "--no-progress"])
    _wait_for_metrics(proc, metrics, more_than=step + 5)
    code, _, err = _stop(proc, signal.SIGTERM)
    assert code == 143, err[-3000:]
    assert f"restored step {step}" in err
    step2, path2 = _stopped_at(err, "SIGTERM")
    assert step2 > step + 5 and os.path.isfile(path2)


def test_sigint_during_setup_is_one_line(tmp_path):
    proc = _start([*TINY, "--out", str(tmp_path / "run")])
    for line in proc.stderr:  # said just before the training step is compiled
        if line.startswith("compiling the training step"):
            break
    else:
        raise AssertionError(f"no 'compiling' line; exit {proc.wait()}")
    code, _, err = _stop(proc, signal.SIGINT)
    assert code == 130
    assert err.strip().splitlines() == [
        "scoreflow train: interrupted by SIGINT during compilation of the training step; exiting"
    ] or err.strip().startswith("scoreflow train: SIGINT received"), err


_SLOW_IMPORT = """
import signal, sys, time, _scoreflow_cli
# A shell that starts the test run in the background (`&`, no job control) passes SIGINT down as ignored, and
# Python then installs no KeyboardInterrupt handler; a terminal's Ctrl-C reaches a process that has one.
signal.signal(signal.SIGINT, signal.default_int_handler)
class SlowImport:  # stands in for the seconds `import scoreflow` (and jax) takes on a small machine
    def find_spec(self, name, path=None, target=None):
        if name == "scoreflow":
            print("importing", flush=True)
            time.sleep(60)
        return None
sys.meta_path.insert(0, SlowImport())
sys.argv[1:] = ["info", "."]
sys.exit(_scoreflow_cli.main())
"""


def test_sigint_while_importing_jax_is_one_line():
    """The console script's launcher sits outside the package, so a Ctrl-C while `scoreflow` (and jax) are still
    being imported ends with one line and exit 130. The import is held open by a slow finder, so the signal
    arrives during it on any machine."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_IMPORT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "importing"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines() == ["scoreflow: interrupted by SIGINT while importing scoreflow and jax; exiting"]
