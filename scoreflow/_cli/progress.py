"""Phase messages on stderr, so that no step of a command is a silent minute: "compiling ...", "training",
"evaluating ... 8/64", each with the seconds it took. A phase also tells the signal handling what a Ctrl-C
would interrupt."""

import contextlib
import sys
import time


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def phase(message: str, *, total: int | None = None, unit: str = "", interrupts=None, bar: bool = True):
    """Print `message ...`, run the block, print `  done in X s`. With `total`, the block calls the
    yielded `advance(n)` as work completes: a progress bar (`bar`) or, without one, a line per quarter."""
    if interrupts is not None:
        interrupts.doing = message
    say(f"{message} ...")
    t = time.time()
    done = 0
    shown_quarter = 0
    pbar = None
    if total is not None and total > 1 and bar:
        from tqdm.auto import tqdm

        pbar = tqdm(total=total, unit=unit or "it", file=sys.stderr, dynamic_ncols=True, leave=False)

    def advance(n: int = 1) -> None:
        nonlocal done, shown_quarter
        done += n
        if pbar is not None:
            pbar.update(n)
        elif total is not None and total > 1:
            q = 4 * done // total
            if q > shown_quarter and done < total:
                shown_quarter = q
                say(f"  {done}/{total} {unit} ({time.time() - t:.1f} s)")

    try:
        yield advance
    finally:
        if pbar is not None:
            pbar.close()
    say(f"  done in {time.time() - t:.1f} s")
