"""One `scoreflow train` session on a run folder: start or resume, the metrics file, the loop, the results.

Shared by every model family: a family builds its state, objective and data, and hands them to `Session.loop`.
"""

import json
import os
import sys
import time

from .. import train as sft
from .run import Run


class Session:
    """`run`: the run folder; `config`: the resolved config; `resume`: whether it continues a run;
    `progress`: whether to draw progress bars."""

    def __init__(self, run: Run, config: dict, *, resume: bool, progress: bool):
        self.run = run
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
        """`train_loop` with the config's settings, logging to metrics.jsonl. Returns the final state."""
        c = self.config
        self._t0 = time.time()
        self._metrics = open(self.run.metrics_path, "a")
        t = time.time()
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
            )
        finally:
            self._metrics.close()
            self._metrics = None
        self.train_seconds = time.time() - t
        return state

    def wall_seconds(self) -> float:
        return round(time.time() - self.start, 1)
