"""`scoreflow info RUN`: a run folder's config, checkpoints, parameters and results."""

import argparse
import json
import os

from .. import train as sft
from . import registry
from .run import Run, family_name


def add_parser(sub) -> None:
    i = sub.add_parser(
        "info", help="summarise a run folder", description="Print RUN's config, checkpoints, parameters and results."
    )
    i.add_argument("run", help="run folder written by `scoreflow train`")


def run(a: argparse.Namespace, interrupts) -> int:
    folder = Run(a.run)
    cfg = folder.read_config()
    ckpts = sft.list_checkpoints(folder.checkpoints)
    metrics = folder.read_metrics()
    d = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    shape = d.get("shape")
    print(f"run {a.run}")
    print(
        f"  data        {d.get('name', '?')} {tuple(shape) if isinstance(shape, list) else '?'}, "
        f"{d.get('n_train', '?')} train / {d.get('n_test', '?')} test, levels {d.get('num_levels', '?')}"
    )
    print(f"  parameters  {cfg.get('parameters', '?')}")
    print("  config      " + " ".join(f"{k}={v}" for k, v in cfg["config"].items()))
    print(f"  checkpoints {[s for s, _ in ckpts]}")
    for line in getattr(registry.get(family_name(cfg)), "info_lines", lambda run, c: [])(folder, cfg["config"]):
        print(line)  # a family's own lines (a distilled run: its teacher and the checkpoints of each stage)
    if metrics:
        last = metrics[-1]
        print(
            "  last logged "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items())
        )
    res_path = folder.file("results.json")
    if os.path.exists(res_path):
        with open(res_path) as f:
            print("  results     " + json.dumps(json.load(f)))
    return 0
