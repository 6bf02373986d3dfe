"""The `scoreflow` command: `train` (the main job), `sample RUN`, `nll RUN`, `info RUN`.

The CLI is one module per command (`train.py`, `sample.py`, `nll.py`, `info.py`) over the run folder (`run.py`,
`session.py`) and one registry of model families (`registry.py`), into which each family module
(`continuous.py`, `d3pm.py`) registers itself. This module puts them together: it imports the families (the
first registered is the default `--model`), then builds the parser from the commands. Strings from the command
line become objects in exactly one place, `table.TABLE`.
"""

import argparse
import sys

from . import (
    compress,
    continuous as continuous,
    d3pm as d3pm,
    distill,
    distilled as distilled,
    ebm as ebm,
    info,
    nce as nce,
    nll,
    sample,
    train,
)
from .interrupt import Interrupted, Interrupts
from .options import UsageError


COMMANDS = {"train": train, "sample": sample, "nll": nll, "info": info, "distill": distill,
            "compress": compress, "decompress": compress}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scoreflow",
        description="Train and evaluate diffusion / score-based models. `scoreflow train` with no arguments "
        "trains a VDM (learned schedule, small U-Net, eps prediction) on the built-in 8x8 digits and reports "
        "test bits/dim next to simple baselines.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for command in COMMANDS.values():
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `scoreflow` console script. Returns the exit code (2 for bad options or data)."""
    from .. import train as sft

    p = parser()
    a = p.parse_args(argv)
    with Interrupts(a.command) as interrupts:
        try:
            return COMMANDS[a.command].run(a, interrupts)
        except (UsageError, sft.CheckpointError) as e:
            p.exit(2, f"scoreflow {a.command}: error: {e}\n")
        except Interrupted as e:
            print(e, file=sys.stderr)
            return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
