"""Ctrl-C (SIGINT) and SIGTERM for the `scoreflow` command.

While training, the first signal asks the loop to stop at the next step boundary: it writes a checkpoint, says
where, and the command exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second signal
exits at once with that code (the checkpoints already written are whole: saves are atomic). Outside the
training loop (imports, data loading, compilation, evaluation) a signal exits at once with one line saying what
was interrupted, instead of a traceback from inside jax.

Why not Python's default `KeyboardInterrupt`: it is raised wherever the main thread happens to be, and inside
jax's garbage-collection callback it is printed as "Exception ignored" and lost, so training carried on. Here the
Python-level handler does nothing; the signal number reaches a watcher thread through `signal.set_wakeup_fd`,
so the command also reacts while the main thread is inside a long compilation.
"""

import os
import signal
import sys
import threading
from collections.abc import Callable


SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised in the main thread when training stopped on a signal; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Interrupts:
    """Signal handling for one command (`command` names it in messages). Use as a context manager in the
    main thread. `doing` says what the command is doing (shown if a signal ends it); `training()` marks the
    stretch in which a first signal only requests a stop (`requested`, `signal_name`)."""

    def __init__(
        self,
        command: str,
        *,
        write: Callable[[str], None] | None = None,
        exit: Callable[[int], None] = os._exit,
    ):
        self.command = command
        self.doing = "setup (imports, data, compilation)"
        self.requested: int | None = None
        self._training = False
        self._write = write or self._stderr
        self._exit = exit
        self._lock = threading.Lock()
        self._saved = None

    @staticmethod
    def _stderr(line: str) -> None:
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - a closed stdout must not stop the exit
            pass
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    @property
    def signal_name(self) -> str | None:
        return None if self.requested is None else signal.Signals(self.requested).name

    def set_training(self, on: bool) -> None:
        """Inside the training loop (`on`): a first signal requests a stop at the next step boundary."""
        with self._lock:
            self._training = on

    def on_signal(self, signum: int) -> None:
        """What a signal does (called by the watcher thread; callable directly in tests)."""
        name = signal.Signals(signum).name
        with self._lock:
            first = self.requested is None
            if first:
                self.requested = signum
            training = self._training
        if training and first:
            self._write(
                f"scoreflow {self.command}: {name} received: stopping after this step and writing a checkpoint "
                f"(send it again to exit at once)"
            )
            return
        if training:
            self._write(
                f"scoreflow {self.command}: second {name}: exiting at once (checkpoints already written are kept)"
            )
        else:
            self._write(f"scoreflow {self.command}: interrupted by {name} during {self.doing}; exiting")
        self._exit(128 + signum)

    # -- installation ---------------------------------------------------------------------------------------
    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signals can only be handled in the main thread; leave them alone
        r, w = os.pipe()
        os.set_blocking(w, False)
        handlers = {s: signal.signal(s, lambda *_: None) for s in SIGNALS}
        old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self._saved = (handlers, old_fd, r, w)
        threading.Thread(target=self._watch, args=(r,), name="scoreflow-signals", daemon=True).start()
        return self

    def _watch(self, r: int) -> None:
        try:
            while data := os.read(r, 64):
                for signum in data:
                    if signum in SIGNALS:
                        self.on_signal(signum)
        except OSError:
            pass
        finally:
            os.close(r)

    def __exit__(self, *exc):
        if self._saved is None:
            return False
        handlers, old_fd, r, w = self._saved
        self._saved = None
        signal.set_wakeup_fd(old_fd)
        for s, h in handlers.items():
            signal.signal(s, h)
        os.close(w)  # the watcher reads end-of-file and returns
        return False
