"""`scoreflow nll RUN`: the likelihood of a trained run's EMA model on test examples."""

import argparse

from . import registry
from .options import nonneg_int, positive_int
from .run import Run, family_name


def add_parser(sub) -> None:
    n = sub.add_parser(
        "nll",
        help="probability-flow likelihood of a trained run",
        description="Exact or Hutchinson probability-flow likelihood (bits/dim with dequantisation for "
        "quantised data) of RUN's EMA model on test examples.",
    )
    n.add_argument("run", help="run folder written by `scoreflow train`")
    n.add_argument("--num-examples", type=positive_int, default=None, help="test examples (default: 4)")
    n.add_argument("--seed", type=nonneg_int, default=None, help="seed of dequantisation noise and probes (default: 0)")
    for f in registry.FAMILIES.values():
        for o in f.nll_options:
            o.add_to(n, default=None)


def run(a: argparse.Namespace, interrupts) -> int:
    folder = Run(a.run)
    family = registry.get(family_name(folder.read_config()))
    registry.refuse_foreign(a, family, "nll_options", f"the {family.title} run {a.run!r}")
    return family.nll(a, folder)
