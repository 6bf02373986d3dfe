"""One `scoreflow train` session on a run folder: start or resume, the metrics file, the loop, the results.

Shared by every model family: a family builds its state, objective and data, and hands them to `Session.loop`.
Times are cumulative over sessions: each checkpoint records the training seconds up to its step, so after
`--resume` the metrics' `time` column and results.json's `train_seconds` continue where the run stopped.
"""

import json
import os
import sys
import time

from .. import train as sft
from .interrupt import Interrupted, Interrupts
from .options import UsageError
from .progress import say
from .run import Run, binding


class Session:
    """`run`: the run folder; `family`: the model family; `config`: the resolved config; `resume`: whether it
    continues a run; `progress`: whether to draw progress bars; `interrupts`: the command's signal handling."""

    def __init__(self, run: Run, family, config: dict, *, resume: bool, progress: bool, interrupts: Interrupts):
        self.run = run
        self.family = family
        self.config = config
        self.resume = resume
        self.progress = progress
        self.interrupts = interrupts
        self.start = time.time()
        self.start_step = 0
        self.seconds_before = 0.0  # training seconds of earlier sessions
        self.train_seconds = 0.0  # of this session
        self.written: list[str] = []
        self._t0 = time.time()
        self._metrics = None

    def wrote(self, *paths: str) -> None:
        """Record files written by this session (listed at the end of `train`)."""
        self.written += [p for p in paths if p not in self.written]

    def begin(self, state, config_doc):
        """Resume: `state` restored from the newest checkpoint (unchanged if there is none) and the metrics
        logged after it dropped. New run: config.json (`config_doc()`) and an empty metrics file written.
        Either way, temporary files left by killed saves of earlier sessions are removed first."""
        self.run.require_writable("--out")
        try:
            os.makedirs(self.run.checkpoints, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--out {self.run.path!r}: cannot create the run folder ({e.strerror})") from None
        for p in sft.clean_temporaries(self.run.checkpoints, before=self.start):
            print(f"removed {p} (left by a save that was killed)", file=sys.stderr)
        if self.resume:
            restored = self.run.restore(state, self.family, self.config, required=False)
            meta = {}
            if restored is not None:
                state, meta = restored
            done = int(state.step)
            kept = self.run.read_metrics(upto=done)
            with open(self.run.metrics_path, "w") as f:  # drop lines logged after the checkpoint: they will be redone
                f.writelines(json.dumps(r) + "\n" for r in kept)
            self.start_step = done
            self.seconds_before = float(meta.get("train_seconds", kept[-1]["time"] if kept and done else 0.0))
            print(f"restored step {done}", file=sys.stderr)
        else:
            self.wrote(self.run.write_json("config.json", config_doc()))
            open(self.run.metrics_path, "w").close()
        self.wrote(self.run.metrics_path)
        self._t0 = time.time()
        return state

    def elapsed(self) -> float:
        """Training seconds of the run so far (earlier sessions included)."""
        return self.seconds_before + (time.time() - self._t0)

    def log(self, step: int, metrics: dict) -> None:
        line = json.dumps({"step": step, **metrics, "time": round(self.elapsed(), 3)}) + "\n"
        if self._metrics is not None:
            self._metrics.write(line)
            self._metrics.flush()
        else:
            with open(self.run.metrics_path, "a") as f:
                f.write(line)

    def loop(self, state, step_fn, data, *, mesh=None):
        """`train_loop` with the config's settings, logging to metrics.jsonl. Returns the final state.

        Raises `Interrupted` (after the loop has written a checkpoint) if SIGINT or SIGTERM arrived."""
        c = self.config
        intr = self.interrupts
        bound = binding(self.family, c)
        self._t0 = time.time()
        self._metrics = open(self.run.metrics_path, "a")
        t = time.time()
        intr.doing = "compilation of the training step"
        start = int(state.step)
        if start >= c["steps"]:
            say(f"nothing to train: the run is at step {start} of {c['steps']}")
        else:
            say("compiling the training step (the first step; up to a minute on a CPU) ...")

        def first_step():
            intr.set_training(True)
            say(f"compiled in {time.time() - t:.1f} s; training steps {start + 1}..{c['steps']}")

        try:
            state = sft.train_loop(
                state,
                step_fn,
                data,
                num_steps=c["steps"],
                batch_size=c["batch_size"],
                accumulate=c["accumulate"],
                seed=c["seed"],
                mesh=mesh,
                checkpoint_dir=self.run.checkpoints,
                checkpoint_every=c["checkpoint_every"],
                keep=c["keep"],
                log_every=c["log_every"],
                callback=self.log,
                progress=self.progress,
                checkpoint_metadata=lambda step: {**bound, "train_seconds": round(self.elapsed(), 3)},
                should_stop=lambda: intr.requested is not None,
                on_first_step=first_step,
            )
        finally:
            intr.set_training(False)
            intr.doing = "evaluation after training"
            self._metrics.close()
            self._metrics = None
        self.train_seconds = time.time() - t
        step = int(state.step)
        self.wrote(*(p for s, p in sft.list_checkpoints(self.run.checkpoints) if s > self.start_step))
        if intr.requested is not None:
            where = sft.checkpoint_path(self.run.checkpoints, step)
            raise Interrupted(
                f"scoreflow train: stopped by {intr.signal_name} at step {step} of {c['steps']}; checkpoint "
                f"written: {where}\n  continue with: scoreflow train --resume --out {self.run.path}",
                128 + intr.requested,
            )
        return state

    def timing(self, step: int) -> dict:
        """results.json's step and time entries: totals over the run and this session's share."""
        return {
            "steps": step,
            "train_seconds": round(self.seconds_before + self.train_seconds, 1),
            "steps_this_session": step - self.start_step,
            "train_seconds_this_session": round(self.train_seconds, 1),
        }

    def trained_line(self, r: dict) -> str:
        """The first line of the summary: steps and seconds, this session's and the run's."""
        wall = f"wall {r.get('wall_seconds', '?')} s"
        if not self.start_step:
            return f"trained {r['steps']} steps in {r['train_seconds']} s ({wall})"
        return (
            f"trained {r['steps_this_session']} steps in {r['train_seconds_this_session']} s this session "
            f"(steps {self.start_step} -> {r['steps']}; {wall}); {r['steps']} steps in {r['train_seconds']} s in all"
        )

    def wall_seconds(self) -> float:
        return round(time.time() - self.start, 1)

    def files_line(self) -> str:
        return "wrote " + ", ".join(self.written)
