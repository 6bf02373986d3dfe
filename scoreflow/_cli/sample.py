"""`scoreflow sample RUN`: draw samples from a trained run's EMA model. With no options it draws what training
drew (same seed, number and sampler): the same samples.png, byte for byte, written as samples_step<N>.png."""

import argparse

from . import guidance, registry
from .options import UsageError, nonneg_int, positive_int
from .run import Run, family_name


def add_parser(sub) -> None:
    s = sub.add_parser(
        "sample",
        help="draw samples from a trained run",
        description="Draw samples from the EMA model of RUN; writes a PNG (text for character data) and a .npy "
        "named by the checkpoint's step, never over an existing file. Defaults are the run's own: with no options "
        "the picture is training's samples.png again.",
    )
    s.add_argument("run", help="run folder written by `scoreflow train`")
    s.add_argument("--num-samples", type=positive_int, default=None, help="number of samples (default: as in training)")
    s.add_argument(
        "--seed",
        type=nonneg_int,
        default=None,
        help="draw the samples a run trained with --seed SEED draws (default: RUN's seed, i.e. RUN's samples.png)",
    )
    s.add_argument(
        "--output",
        default=None,
        help="path of the PNG (its .npy alongside); refused if it exists "
        "(default: RUN/samples_step<N>[_seed<SEED>].png, numbered _2, _3, ... if taken)",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    for f in registry.FAMILIES.values():
        for o in f.sample_options:
            o.add_to(s, default=None, default_text="as in training")
    guidance.add_arguments(s)


def run(a: argparse.Namespace, interrupts) -> int:
    folder = Run(a.run)
    family = registry.get(family_name(folder.read_config()))
    registry.refuse_foreign(a, family, "sample_options", f"the {family.title} run {a.run!r}")
    if family.name != "continuous" and guidance.given(a):
        raise UsageError(f"{guidance.given(a)[0]} applies to continuous runs only; {a.run!r} is a {family.title} run")
    return family.sample(a, folder, interrupts)
