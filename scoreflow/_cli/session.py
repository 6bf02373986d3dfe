"""One `scoreflow train` session on a run folder: start or resume, the metrics file, the loop, the results.

Shared by every model family: a family builds its state, objective and data, and hands them to `Session.loop`.
"""

import json
import os
import sys
import time

from .. import train as sft
from .interrupt import Interrupted, Interrupts
from .run import Run


class Session:
    """`run`: the run folder; `config`: the resolved config; `resume`: whether it continues a run;
    `progress`: whether to draw progress bars; `interrupts`: the command's signal handling."""

    def __init__(self, run: Run, config: dict, *, resume: bool, progress: bool, interrupts: Interrupts):
        self.run = run
        self.interrupts = interrupts
        self.config = config
        self.resume = resume
        self.progress = progress
        self.start = time.time()
        self.train_seconds = 0.0
        self._t0 = time.time()
        self._metrics = None

    def begin(self, state, config_doc):
        """Resume: `state` restored from the newest checkpoint (unchanged if there is none) and the metrics
        logged after it dropped. New run: config.json (`config_doc()`) and an empty metrics file written."""
        os.makedirs(self.run.checkpoints, exist_ok=True)
        if self.resume:
            restored = sft.restore_latest(self.run.checkpoints, state)
            if restored is not None:
                state = restored[0]
            done = int(state.step)
            kept = self.run.read_metrics(upto=done)
            with open(self.run.metrics_path, "w") as f:  # drop lines logged after the checkpoint: they will be redone
                f.writelines(json.dumps(r) + "\n" for r in kept)
            print(f"restored step {done}", file=sys.stderr)
        else:
            self.run.write_json("config.json", config_doc())
            open(self.run.metrics_path, "w").close()
        self._t0 = time.time()
        return state

    def log(self, step: int, metrics: dict) -> None:
        line = json.dumps({"step": step, **metrics, "time": round(time.time() - self._t0, 3)}) + "\n"
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
        self._t0 = time.time()
        self._metrics = open(self.run.metrics_path, "a")
        t = time.time()
        intr.doing = "compilation of the training step"

        def first_step():
            intr.set_training(True)

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
                should_stop=lambda: intr.requested is not None,
                on_first_step=first_step,
            )
        finally:
            intr.set_training(False)
            intr.doing = "evaluation after training"
            self._metrics.close()
            self._metrics = None
        self.train_seconds = time.time() - t
        if intr.requested is not None:
            step = int(state.step)
            where = sft.checkpoint_path(self.run.checkpoints, step)
            raise Interrupted(
                f"scoreflow train: stopped by {intr.signal_name} at step {step} of {c['steps']}; checkpoint "
                f"written: {where}\n  continue with: scoreflow train --resume --out {self.run.path}",
                128 + intr.requested,
            )
        return state

    def wall_seconds(self) -> float:
        return round(time.time() - self.start, 1)
