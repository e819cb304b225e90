"""Signals within ``interruptible``, sent to this process: what a Slurm job launched by submitit
gets (SIGUSR2 with submitit's handler waiting for it), and a SIGTERM no launcher waits for."""

from __future__ import annotations

import os
import signal

import pytest

from peftlab import interrupts


@pytest.fixture
def launcher_waiting_for_usr2():
    """A handler on SIGUSR2 installed as submitit installs its requeue handler (signal.signal,
    before the job's function runs); the calls it gets."""
    calls: list[tuple[int, object]] = []

    def checkpoint_and_try_requeue(signum, frame):
        calls.append((signum, frame))

    before = signal.signal(signal.SIGUSR2, checkpoint_and_try_requeue)
    yield calls, checkpoint_and_try_requeue
    signal.signal(signal.SIGUSR2, before)


def test_sigusr2_interrupts_the_run_then_is_handed_on_to_the_launchers_handler(
    launcher_waiting_for_usr2,
):
    calls, launchers = launcher_waiting_for_usr2
    with pytest.raises(interrupts.Interrupted) as raised, interrupts.interruptible():
        os.kill(os.getpid(), signal.SIGUSR2)
        signal.sigtimedwait([], 1)  # handlers run before this returns: nothing after it does
        raise AssertionError("SIGUSR2 did not interrupt the block")
    interrupted = raised.value
    assert (interrupted.signal_name, interrupted.exit_code) == ("SIGUSR2", 128 + signal.SIGUSR2)
    assert calls == []  # not before the run has ended
    assert signal.getsignal(signal.SIGUSR2) is launchers  # the launcher's again, outside
    interrupted.hand_on()
    assert calls == [(signal.SIGUSR2, None)]


def test_a_signal_no_launcher_waits_for_is_handed_on_to_no_one(launcher_waiting_for_usr2):
    calls, _ = launcher_waiting_for_usr2
    with pytest.raises(interrupts.Interrupted) as raised, interrupts.interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 1)
        raise AssertionError("SIGTERM did not interrupt the block")
    assert raised.value.signal_name == "SIGTERM"
    raised.value.hand_on()
    assert calls == []


def test_without_a_launchers_handler_sigusr2_is_left_alone():
    """Outside a submitit job no one waits for SIGUSR2: its default (ending the process) stays."""
    before = signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    try:
        with interrupts.interruptible():
            assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
            assert callable(signal.getsignal(signal.SIGTERM))
    finally:
        signal.signal(signal.SIGUSR2, before)
