"""`scoreflow nll RUN`: the likelihood of a trained run's EMA model on test examples. With the run's settings
(the defaults) it uses the keys training used, example by example, so on the examples training evaluated it
prints training's number."""

import argparse

from . import registry
from .options import nonneg_int, positive_int
from .run import Run, family_name


NLL_EXAMPLES = 160
"""Default number of test examples, for a standard error below 0.02 bits/dim on the main job. Measured on a run of
the main job (`scoreflow train`, 2000 steps; `scoreflow nll RUN --num-examples 128`): 1.8065 bits/dim with standard
error 0.019, i.e. a per-example standard deviation of 0.215; 160 examples give 0.215 / sqrt(160) = 0.017."""


def add_parser(sub) -> None:
    n = sub.add_parser(
        "nll",
        help="probability-flow likelihood of a trained run",
        description="Exact or Hutchinson probability-flow likelihood (bits/dim with dequantisation for "
        "quantised data) of RUN's EMA model on its first test examples, with the run's settings unless given. "
        "Example i uses the same key as in training, so the first --nll-examples give training's number.",
    )
    n.add_argument("run", help="run folder written by `scoreflow train`")
    n.add_argument(
        "--num-examples",
        type=positive_int,
        default=NLL_EXAMPLES,
        help="first test examples evaluated (default: %(default)s, for a standard error below 0.02 bits/dim on "
        "the main job's digits)",
    )
    n.add_argument(
        "--seed",
        type=nonneg_int,
        default=None,
        help="use the dequantisation noise and probes of a run trained with --seed SEED (default: RUN's seed)",
    )
    n.add_argument("--no-progress", action="store_true", help="no progress bar")
    for f in registry.FAMILIES.values():
        for o in f.nll_options:
            o.add_to(n, default=None, default_text="as in training")


def run(a: argparse.Namespace, interrupts) -> int:
    folder = Run(a.run)
    family = registry.get(family_name(folder.read_config()))
    registry.refuse_foreign(a, family, "nll_options", f"the {family.title} run {a.run!r}")
    return family.nll(a, folder, interrupts)
