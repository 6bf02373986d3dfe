"""A run folder: config.json, metrics.jsonl, checkpoints/, results.json and the pictures, read and written here
only. Every problem with a folder or its files is a `UsageError` naming the file and the problem.

config.json is bound to the checkpoints: each checkpoint's header holds the model-defining part of the config
(`AbstractFamily.model_keys`) and its SHA-256, and loading refuses a checkpoint whose binding differs from
config.json, naming the changed keys (`parameterisation: eps -> x0`). Editing such a key would otherwise run
another model on the trained weights without a word. Checkpoints written before the binding existed load as
before.
"""

import hashlib
import json
import os

import equinox as eqx
import jax

from .. import train as sft
from . import registry
from .options import UsageError, shown


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

    # -- config.json -----------------------------------------------------------------------------------------
    def read_config(self) -> dict:
        """config.json as written by `train`, checked: a `UsageError` naming the file and the problem if it is
        missing, not JSON, or lacks or mistypes a key of its model family's config."""
        path = self.config_path
        if not self.exists():
            raise UsageError(f"RUN {self.path!r}: not a run folder (no config.json)")
        try:
            with open(path) as f:
                cfg = json.load(f)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{path}: cannot be read ({e})") from None
        if not isinstance(cfg, dict) or not isinstance(cfg.get("config"), dict):
            raise UsageError(f'{path}: expected a JSON object with a "config" object (as `scoreflow train` writes)')
        name = family_name(cfg)
        if name not in registry.FAMILIES:
            raise UsageError(f"{path}: config.model = {name!r}: expected one of {sorted(registry.FAMILIES)}")
        try:
            cfg["config"] = registry.get(name).check_config(cfg["config"])
        except ValueError as e:
            raise UsageError(f"{path}: config.{e}") from None
        return cfg

    def write_json(self, name: str, obj) -> str:
        """Write `obj` to `name` in the folder (atomically: a crash leaves the old file or the new one)."""
        path = self.file(name)
        tmp = path + f".{os.getpid()}.part"
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
        return path

    def read_metrics(self, upto: int | None = None) -> list[dict]:
        return read_metrics(self.metrics_path, upto)

    # -- folders and outputs ---------------------------------------------------------------------------------
    def require_writable(self, what: str) -> None:
        """`UsageError` if the path is not a folder, or the folder (or its checkpoints/) cannot be written."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise UsageError(f"{what} {self.path!r}: exists and is not a folder; expected a run folder")
        for folder in (self.path, self.checkpoints):
            if os.path.isdir(folder) and (not os.access(folder, os.W_OK) or not os.stat(folder).st_mode & 0o222):
                raise UsageError(f"{what} {self.path!r}: {folder} is read-only; make it writable or use another run")

    def output_stem(self, name: str, exts: tuple[str, ...]) -> tuple[str, str | None]:
        """A path stem in the folder for new outputs `name + ext` (ext in `exts`) that overwrites nothing:
        `name` itself, else `name_2`, `name_3`, ...; returns (stem, note), the note saying what was taken."""
        stem = self.file(name)
        taken = [stem + e for e in exts if os.path.exists(stem + e)]
        if not taken:
            return stem, None
        k = 2
        while any(os.path.exists(f"{stem}_{k}{e}") for e in exts):
            k += 1
        return f"{stem}_{k}", f"{taken[0]} exists (not overwritten): writing {stem}_{k}{exts[0]} instead"

    # -- checkpoints -----------------------------------------------------------------------------------------
    def restore(self, like, family: "registry.AbstractFamily", c: dict, *, required: bool = True):
        """(state, metadata) from the newest usable checkpoint, loaded into the structure of `like`, after
        checking that it was trained with `c`'s model-defining keys. None if there is none and not `required`."""
        check_binding(self, family, c)
        restored = sft.restore_latest(self.checkpoints, like)
        if restored is None:
            if required:
                raise UsageError(f"RUN {self.path!r}: no checkpoint in {self.checkpoints}")
            return None
        check_binding(self, family, c, restored[1])
        return restored


def family_name(cfg: dict) -> str:
    """The model family of a config.json (runs written before families were recorded are continuous)."""
    return cfg["config"].get("model", "continuous")


def binding(family: "registry.AbstractFamily", c: dict) -> dict:
    """Checkpoint metadata that ties a checkpoint to the model-defining keys of its config."""
    model = {k: c.get(k) for k in family.model_keys}
    digest = hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()
    return {"model_config": model, "model_config_sha256": digest}


def check_binding(run: Run, family, c: dict, meta: dict | None = None) -> None:
    """Refuse a checkpoint (the newest readable one, or the one with metadata `meta`) trained with other
    model-defining keys than `c`; the error names each changed key with its checkpoint and config.json values."""
    path = None
    if meta is None:
        for _, p in reversed(sft.list_checkpoints(run.checkpoints)):
            try:
                meta, path = sft.read_header(p)["metadata"], p
                break
            except sft.CheckpointError:
                continue
        else:
            return
    stored = meta.get("model_config")
    if stored is None:  # written before checkpoints were bound to their config
        return
    now = binding(family, c)
    if meta.get("model_config_sha256") == now["model_config_sha256"]:
        return
    current = now["model_config"]
    changed = [
        f"{k}: {shown(stored.get(k, '(absent)'))} -> {shown(current.get(k, '(absent)'))}"
        for k in sorted(set(stored) | set(current))
        if stored.get(k) != current.get(k)
    ]
    where = path or f"the checkpoint at step {meta.get('step')}"
    raise UsageError(
        f"{run.config_path} does not match {where}, which was trained with other model settings: "
        f"{'; '.join(changed)}. Undo the edit of config.json, or train a new run"
    )


def read_metrics(path: str, upto: int | None = None) -> list[dict]:
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        lines = f.readlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            int(r["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            if i == len(lines) and not line.endswith("\n"):  # cut short by a killed writer: dropped
                continue
            raise UsageError(f"{path}: line {i} is not a metrics record ({line.strip()[:60]!r})") from None
        out.append(r)
    return [r for r in out if upto is None or r["step"] <= upto]


def count_params(model) -> int:
    return int(sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))))


def output_stem(run: Run, output: str | None, name: str, exts: tuple[str, ...]) -> tuple[str, str | None]:
    """Where `sample` writes: `--output` (refused if any of its files exists), or `name` in the run folder,
    numbered to overwrite nothing. Returns (stem, note saying a name was taken, or None)."""
    if output is None:
        run.require_writable("RUN")
        return run.output_stem(name, exts)
    stem = os.path.splitext(output)[0]
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise UsageError(
            f"--output {output!r}: the folder {parent} does not exist; expected a path in an existing folder"
        )
    taken = [stem + e for e in exts if os.path.exists(stem + e)]
    if taken:
        raise UsageError(f"--output {output!r}: {taken[0]} exists; refusing to overwrite it (choose another path)")
    return stem, None
