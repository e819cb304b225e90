"""SIGINT and SIGTERM as an exception a run can end on: KILLED in MLflow, one line, exit 130/143.

Ctrl-C sends SIGINT; Slurm, ``docker stop``, systemd and Kubernetes send SIGTERM. Within
:func:`interruptible` both raise :class:`Interrupted` in the main thread, so the run unwinds
through its ``finally`` blocks; a second signal ends the process at once.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):  # not an Exception: no library's `except Exception` eats it
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # what a shell reports for a process the signal ended


class _Deferral:
    """Signals are process-wide: so is the one place that holds one back (see :func:`deferred`)."""

    depth = 0
    pending: int | None = None


@contextmanager
def interruptible() -> Iterator[None]:
    """Within: SIGINT or SIGTERM raises :class:`Interrupted`; the next one acts as by default."""

    def interrupt(signum, frame):
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)  # a second signal ends the process now
        if _Deferral.depth:
            _Deferral.pending = signum
            return
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def pending() -> bool:
    """Whether an interrupt is being held back by :func:`deferred`."""
    return _Deferral.pending is not None


@contextmanager
def deferred() -> Iterator[None]:
    """Within: an interrupt waits for the block to end. For writes to the MLflow store, which
    an exception raised halfway would leave holding SQLite's write lock."""
    _Deferral.depth += 1
    try:
        yield
    finally:
        _Deferral.depth -= 1
        if _Deferral.depth == 0 and _Deferral.pending is not None:
            signum, _Deferral.pending = _Deferral.pending, None
            raise Interrupted(signum)
