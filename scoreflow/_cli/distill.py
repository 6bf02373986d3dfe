"""`scoreflow distill RUN --steps N`: distil a trained continuous run into an N-step student, in a new run folder.

Progressive distillation (Salimans & Ho, 2022) halves DDIM's steps from `--start-steps` down to `--steps`, each
student starting from its teacher; with `--guidance-range LO,HI` (a class-conditional teacher) it first trains
one w-conditioned student on the classifier-free-guided pair (Meng et al., 2023, stage 1) and then halves that.
Each halving checkpoints in its own folder; Ctrl-C stops at a step boundary with a checkpoint, and
`scoreflow distill --resume --out OUT` continues. `sample OUT` and `info OUT` work on the result.
"""

import argparse
import math

from . import registry
from .options import nonneg_int, positive_float, positive_int


def parse_range(s: str) -> list[float]:
    """`--guidance-range LO,HI`: 0 <= LO <= HI, finite."""
    try:
        lo, hi = (float(p) for p in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers, e.g. 0,4), got {s!r}") from None
    if not (0.0 <= lo <= hi and math.isfinite(hi)):
        raise argparse.ArgumentTypeError(f"expected LO,HI with 0 <= LO <= HI < inf, got {s!r}")
    return [lo, hi]


def add_parser(sub) -> None:
    d = sub.add_parser(
        "distill",
        help="distil a trained run into a few-step sampler (a new run folder)",
        description="Progressive distillation of RUN's EMA model (a continuous run) into a student that samples "
        "with DDIM in --steps evaluations on the grid it was distilled for; with --guidance-range, guided "
        "distillation of a class-conditional run (one evaluation per step instead of two for classifier-free "
        "guidance). Writes config.json, metrics.jsonl, checkpoints/ (one folder per stage), results.json and "
        "samples.png to --out.",
    )
    d.add_argument("run", nargs="?", default=None, help="the teacher: a run folder written by `scoreflow train`")
    d.add_argument("--steps", type=positive_int, default=4, help="the student's DDIM steps (default: 4)")
    d.add_argument(
        "--start-steps",
        type=positive_int,
        default=64,
        help="the teacher's DDIM steps; halved down to --steps, so --steps times a power of 2 (default: 64)",
    )
    d.add_argument("--train-steps", type=positive_int, default=1000, help="optimiser steps per halving (default: 1000)")
    d.add_argument(
        "--guidance-range",
        type=parse_range,
        default=None,
        metavar="LO,HI",
        help="guided distillation of a class-conditional teacher for guidance strengths w in [LO, HI] "
        "((1 + w) x_c - w x_u; default: none)",
    )
    d.add_argument(
        "--guidance-train-steps",
        type=positive_int,
        default=None,
        help="optimiser steps of guided stage 1 (default: --train-steps)",
    )
    d.add_argument(
        "--guidance-w",
        type=float,
        default=None,
        help="w of the samples drawn at the end (default: the middle of --guidance-range)",
    )
    d.add_argument("--batch-size", type=positive_int, default=64, help="examples per step (default: 64)")
    d.add_argument("--lr", type=positive_float, default=1e-4, help="peak learning rate of Adam (default: 1e-4)")
    d.add_argument("--warmup", type=nonneg_int, default=0, help="warm-up steps per stage (default: 0)")
    d.add_argument(
        "--checkpoint-every", type=positive_int, default=500, help="steps between checkpoints (default: 500)"
    )
    d.add_argument("--seed", type=nonneg_int, default=0, help="seed of noise and data order (default: 0)")
    d.add_argument("--num-samples", type=positive_int, default=64, help="samples drawn at the end (default: 64)")
    d.add_argument("--out", default=None, help="run folder (default: runs/<teacher>-distilled<N>-<time>)")
    d.add_argument("--resume", action="store_true", help="continue the distillation in --out with its saved config")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(a: argparse.Namespace, interrupts) -> int:
    # the work is the distilled family's (registry.py): a command knows no family module
    return registry.get("distilled").distill(a, interrupts)  # type: ignore[attr-defined]
