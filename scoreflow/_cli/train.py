"""`scoreflow train`: train a model of any registered family and write a run folder (the main job)."""

import argparse
import os
import sys
import time

from . import registry
from .options import COMMON_DATA, COMMON_EVAL, COMMON_NETWORK, COMMON_OPTIMISATION, COMMON_RUN, UsageError
from .run import Run, family_name
from .session import Session


def add_parser(sub) -> None:
    t = sub.add_parser(
        "train",
        help="train a model and write a run folder (the main job)",
        description="Train, evaluate (test VLB and probability-flow bits/dim), sample and plot. "
        "Writes config.json, metrics.jsonl, checkpoints/, results.json, samples.png, curves.png, "
        "schedule.png to --out.",
    )
    g = t.add_argument_group("data")
    for o in COMMON_DATA:
        o.add_to(g)
    g = t.add_argument_group("model")
    names = sorted(registry.FAMILIES)
    g.add_argument(
        "--model",
        default=registry.default().name,
        choices=names,
        metavar="{" + ",".join(names) + "}",
        help="; ".join(f"{n}: {registry.FAMILIES[n].help}" for n in names) + " (default: %(default)s)",
    )
    for o in COMMON_NETWORK:
        o.add_to(g)
    for f in sorted(registry.FAMILIES.values(), key=lambda f: f.name):
        if not f.train_options:  # e.g. distilled runs (made by `scoreflow distill`): no empty group in --help
            continue
        g = t.add_argument_group(f"{f.title} models (--model {f.name} only)")
        for o in f.train_options:
            o.add_to(g, suppress=True)
    g = t.add_argument_group("optimisation")
    for o in COMMON_OPTIMISATION:
        o.add_to(g)
    g = t.add_argument_group("run folder")
    g.add_argument("--out", default=None, help="run folder (default: runs/<data>-<loss or model>-<time>)")
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint, with its saved config "
        "(bit-identical to an uninterrupted run)",
    )
    for o in COMMON_RUN:
        o.add_to(g)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = t.add_argument_group("evaluation")
    for o in COMMON_EVAL:
        o.add_to(g)


def run(a: argparse.Namespace, interrupts) -> int:
    if a.resume:
        if a.out is None:
            raise UsageError("--resume needs --out RUN (the run folder to continue)")
        folder = Run(a.out)
        if not folder.exists():
            raise UsageError(f"--out {a.out!r}: no config.json there, nothing to resume")
        cfg = folder.read_config()
        family = registry.get(family_name(cfg))
        c = cfg["config"]
        print(f"resuming {a.out} with its saved config (other options are ignored)", file=sys.stderr)
    else:
        family = registry.get(a.model)
        registry.refuse_foreign(a, family, "train_options", f"--model {family.name}")
        c = family.config_from_args(a)
        if a.out is None:
            tag = c["data"].replace(":", "-").replace(os.sep, "_").strip("._") or "data"
            a.out = os.path.join("runs", f"{tag}-{family.run_tag(c)}-{time.strftime('%Y%m%d-%H%M%S')}")
        folder = Run(a.out)
        if folder.exists():
            raise UsageError(
                f"--out {a.out!r}: already holds a run; pass --resume to continue it or choose another --out"
            )
    folder.require_writable("--out")  # before the data are loaded and the model built
    session = Session(folder, family, c, resume=a.resume, progress=not a.no_progress, interrupts=interrupts)
    return family.train(a, session)
