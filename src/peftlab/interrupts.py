"""SIGINT and SIGTERM as an exception a run can end on: KILLED in MLflow, one line, exit 130/143.

Ctrl-C sends SIGINT; Slurm, ``docker stop``, systemd and Kubernetes send SIGTERM. Within
:func:`interruptible` both raise :class:`Interrupted` in the main thread, so the run unwinds
through its ``finally`` blocks; a second signal ends the process at once.

A Slurm job launched by submitit also gets SIGUSR2 ahead of its time limit or when preempted;
submitit's handler for it requeues the job (and exits), unless the job has timed out more than
``max_num_timeout`` times: then it raises, and the job ends. That signal interrupts the run the
same way (a checkpoint at the step it stops at), and is then handed on to submitit's handler
(:meth:`Interrupted.hand_on`), whose outcome the caller reports: a requeued job resumes the run
from there; otherwise ``peftlab resume`` does.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Caught only where a handler of the process's launcher already waits for them (submitit's).
HANDED_ON = (signal.SIGUSR1, signal.SIGUSR2)


class Interrupted(BaseException):  # not an Exception: no library's `except Exception` eats it
    def __init__(self, signum: int, waiting: Callable | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # what a shell reports for a process the signal ended
        self._waiting = waiting

    def hand_on(self) -> None:
        """Give the signal to the handler that waited for it, once the run has ended: submitit's
        requeues the job and exits (SystemExit), or raises why it does not. Nothing for a
        signal no one else waits for."""
        if self._waiting is not None:
            self._waiting(self.signum, None)


class _Deferral:
    """Signals are process-wide: so is the one place that holds one back (see :func:`deferred`)."""

    depth = 0
    pending: Interrupted | None = None


@contextmanager
def interruptible() -> Iterator[None]:
    """Within: SIGINT or SIGTERM (or a launcher's requeue signal) raises :class:`Interrupted`;
    the next one acts as by default."""
    waiting = {sig: signal.getsignal(sig) for sig in HANDED_ON if callable(signal.getsignal(sig))}

    def interrupt(signum, frame):
        for sig in previous:
            signal.signal(sig, signal.SIG_DFL)  # a second signal ends the process now
        interrupted = Interrupted(signum, waiting.get(signum))
        if _Deferral.depth:
            _Deferral.pending = interrupted
            return
        raise interrupted

    previous = {sig: signal.signal(sig, interrupt) for sig in (*SIGNALS, *waiting)}
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
            interrupted, _Deferral.pending = _Deferral.pending, None
            raise interrupted
