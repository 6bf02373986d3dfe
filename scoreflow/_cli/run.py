"""A run folder: config.json, metrics.jsonl, checkpoints/, results.json and the pictures, read and written here
only. Every problem with a folder or its files is a `UsageError` naming the file."""

import json
import os

import equinox as eqx
import jax

from .. import train as sft
from .options import UsageError


class Run:
    """The run folder at `path`."""

    def __init__(self, path: str):
        self.path = path

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def config_path(self) -> str:
        return self.file("config.json")

    @property
    def checkpoints(self) -> str:
        return self.file("checkpoints")

    @property
    def metrics_path(self) -> str:
        return self.file("metrics.jsonl")

    def exists(self) -> bool:
        return os.path.exists(self.config_path)

    def read_config(self) -> dict:
        """config.json as written by `train`; `UsageError` if there is none."""
        if not self.exists():
            raise UsageError(f"RUN {self.path!r}: not a run folder (no config.json)")
        with open(self.config_path) as f:
            return json.load(f)

    def write_json(self, name: str, obj) -> str:
        path = self.file(name)
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)
        return path

    def read_metrics(self, upto: int | None = None) -> list[dict]:
        return read_metrics(self.metrics_path, upto)

    def restore(self, like):
        """The newest usable checkpoint loaded into the structure of `like`; `UsageError` if there is none."""
        restored = sft.restore_latest(self.checkpoints, like)
        if restored is None:
            raise UsageError(f"RUN {self.path!r}: no checkpoint in {self.checkpoints}")
        return restored[0]


def family_name(cfg: dict) -> str:
    """The model family of a config.json (runs written before families were recorded are continuous)."""
    return cfg["config"].get("model", "continuous")


def read_metrics(path: str, upto: int | None = None) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return [r for r in recs if upto is None or r["step"] <= upto]


def count_params(model) -> int:
    return int(sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))))
