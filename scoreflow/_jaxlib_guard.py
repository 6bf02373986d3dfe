"""A warning at import for jaxlib versions whose CPU LAPACK kernels can deadlock (issue 9).

jaxlib 0.10.0-0.10.2 split a large batched LAPACK call (Cholesky, triangular solve, eigh, QR) into chunks on the
XLA CPU worker pool and block a worker until its chunks finish: with as many such calls in flight as workers, the
process hangs. scoreflow's own hot paths call no LAPACK inside compiled loops, and its dependency range excludes
these versions; this warns where one was installed anyway (e.g. with `--no-deps`), and names the workarounds.
The warning is not raised when `NPROC` is set (the user has chosen a worker count) or on a machine with one core.
"""

import importlib.metadata
import os
import warnings


AFFECTED = ("0.10.0", "0.10.1", "0.10.2")


def check(version: str | None = None, environ: dict | None = None, cpu_count: int | None = None) -> str | None:
    """The warning text for this jaxlib `version` (default: the installed one), or None if it is not affected."""
    if version is None:
        try:
            version = importlib.metadata.version("jaxlib")
        except importlib.metadata.PackageNotFoundError:
            return None
    environ = os.environ if environ is None else environ
    cpu_count = os.cpu_count() if cpu_count is None else cpu_count
    if version not in AFFECTED or "NPROC" in environ or (cpu_count or 1) < 2:
        return None
    return (
        f"scoreflow: jaxlib {version}'s CPU LAPACK kernels can deadlock when several large batched factorisations "
        "(cholesky, triangular solves, eigh, qr) run at once, e.g. inside a vmapped solver loop of your own model. "
        "scoreflow's own code avoids them, but to rule the hang out install jaxlib<0.10 (scoreflow's tested range) "
        "or set the environment variable NPROC=1 before jax starts (one CPU worker: no intra-op parallelism; "
        "measured +9% per training step of the main job on 2 cores, see benchmarks/results/lapack.md)."
    )


def warn_if_affected() -> None:
    text = check()
    if text is not None:
        warnings.warn(text, RuntimeWarning, stacklevel=3)
