"""`scoreflow sample RUN`: draw samples from a trained run's EMA model."""

import argparse

from . import registry
from .options import nonneg_int, positive_int
from .run import Run, family_name


def add_parser(sub) -> None:
    s = sub.add_parser(
        "sample",
        help="draw samples from a trained run",
        description="Draw samples from the EMA model of RUN; writes a PNG and a .npy.",
    )
    s.add_argument("run", help="run folder written by `scoreflow train`")
    s.add_argument("--num-samples", type=positive_int, default=None, help="number of samples (default: 64)")
    s.add_argument("--seed", type=nonneg_int, default=None, help="sampling seed (default: 1)")
    s.add_argument("--output", default=None, help="PNG path (default: RUN/samples-seed<seed>.png)")
    for f in registry.FAMILIES.values():
        for o in f.sample_options:
            o.add_to(s, default=None)


def run(a: argparse.Namespace, interrupts) -> int:
    folder = Run(a.run)
    family = registry.get(family_name(folder.read_config()))
    registry.refuse_foreign(a, family, "sample_options", f"the {family.title} run {a.run!r}")
    return family.sample(a, folder)
