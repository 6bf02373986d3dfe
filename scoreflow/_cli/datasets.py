"""`--data SPEC` to a `Dataset`: the built-in digits and text, toy mixtures, the user's arrays and PNG folders."""

import os
import sys

from .. import data as sfd
from .options import UsageError


def load_data(c: dict) -> sfd.Dataset:
    """The dataset named by `c["data"]` (with `c["bits"]`, `c["seed"]` and, for text, `c["seq_len"]`)."""
    spec = c["data"]
    try:
        if spec == "digits":
            return sfd.load_digits()
        if spec == "digits-binary":
            return sfd.load_binary_digits()
        if spec == "text":
            return sfd.load_text(c.get("seq_len") or 64)
        if spec.startswith("text8:"):
            return sfd.load_text8_dataset(spec[6:], c.get("seq_len") or 64)
        if spec.startswith("toy:"):
            name = spec[4:]
            if name not in sfd.TOY_MIXTURES:
                raise UsageError(
                    f"--data {spec!r}: unknown toy mixture {name!r}; choose from {sorted(sfd.TOY_MIXTURES)}"
                )
            return sfd.load_toy(name, seed=c["seed"])
        if os.path.isdir(spec):
            return sfd.load_png_folder(spec, bits=c["bits"])
        if spec.endswith((".npy", ".npz")) or os.path.exists(spec):
            return sfd.load_array_file(spec, bits=c["bits"])
    except sfd.DataError as e:
        raise UsageError(f"--data {spec!r}: {e}") from None
    raise UsageError(
        f"--data {spec!r}: not 'digits', 'digits-binary', 'text', 'text8:PATH', 'toy:NAME', an existing .npy/.npz "
        "file or a folder of PNGs"
    )


FEW_EXAMPLES = 100
"""Fewer training examples than this get a warning: a model memorises them and its test numbers say little."""


def warn_if_small(ds: sfd.Dataset, c: dict) -> None:
    if len(ds.train) < FEW_EXAMPLES:
        print(
            f"warning: --data {c['data']!r} has only {len(ds.train)} training and {len(ds.test)} test example(s): "
            f"too few to learn a distribution (the model will memorise them, and the test numbers say little; "
            f"use at least {FEW_EXAMPLES}, better thousands)",
            file=sys.stderr,
        )
