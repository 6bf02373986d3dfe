"""Entry point of the `scoreflow` console script.

It lives outside the `scoreflow` package because importing the package imports jax (seconds on a small
machine): a Ctrl-C in that time must give one line and exit 130, not a traceback from inside jax. Once the
command is imported, `scoreflow._cli.interrupt` handles signals.
"""

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the command with `argv` (default: the process's arguments); returns its exit code."""
    try:
        from scoreflow._cli.main import main as run
    except KeyboardInterrupt:
        sys.stderr.write("scoreflow: interrupted by SIGINT while importing scoreflow and jax; exiting\n")
        return 130
    return run(argv)
