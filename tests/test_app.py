"""app.py's end of a run interrupted by SIGUSR2 while a launcher's handler waits for it, as
submitit's does in a Slurm job (here in this process, no Slurm): the run ends KILLED, then one
line says what the handler did, which only the handler decides."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.runners import LONG, train_args, train_in_process
from helpers.stores import new_store, store_runs
from submitit.core.utils import UncompletedJobError

from peftlab import names, training


def requeues(signum, frame):
    """submitit's handler when it requeues the job: `scontrol requeue`, then this."""
    sys.exit(-1)


def refuses(signum, frame):
    """submitit's handler for a job that has timed out more than max_num_timeout times."""
    raise UncompletedJobError("Job not requeued because: timed-out too many times.")


@pytest.fixture
def work(tiny_bloom: Path, tmp_path: Path) -> Path:
    """A folder to run in with an empty store, the tiny model beside it (runners.train_args)."""
    (tmp_path / "model").symlink_to(tiny_bloom)
    (tmp_path / "work").mkdir()
    new_store(tmp_path / "work")
    return tmp_path / "work"


def usr2_at_the_first_checkpoint(trainer_dir: Path) -> threading.Thread:
    """SIGUSR2 to this process once training has written a checkpoint, as Slurm sends it."""

    def send() -> None:
        deadline = time.monotonic() + 180
        while training.last_checkpoint(trainer_dir) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGUSR2)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def interrupted_under(handler, work: Path):
    """A long run interrupted by SIGUSR2 with ``handler`` waiting for it: train.py's exit code,
    its line, the run, and the calls the handler got."""
    calls = []

    def launchers(signum, frame):
        calls.append(signum)
        handler(signum, frame)

    before = signal.signal(signal.SIGUSR2, launchers)
    try:
        sender = usr2_at_the_first_checkpoint(work / "outputs" / "run" / names.TRAINER_DIR)
        result = train_in_process(*train_args(work, LONG), cwd=work)
        sender.join()
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("interrupted by")]
    assert said, result.stderr[-3000:]
    (run,) = store_runs(work)[1]
    return result.returncode, said[0], run, calls


def killed_at_a_checkpoint(run_id: str, work: Path) -> str:
    """The line's start as a pattern: the run ended KILLED, its checkpoint."""
    checkpoint = re.escape(f"{work}/outputs/run/trainer/checkpoint-") + "[0-9]+"
    return (
        f"interrupted by SIGUSR2 while training: MLflow run {run_id} ended KILLED; "
        f"last checkpoint {checkpoint}; "
    )


def test_a_job_the_launcher_requeues_says_the_requeued_job_continues_its_run(work: Path):
    code, line, run, calls = interrupted_under(requeues, work)
    assert calls == [signal.SIGUSR2]
    assert code == -1  # the handler's own exit, left to stand
    then = "the requeued job continues it"
    assert re.fullmatch(killed_at_a_checkpoint(run.info.run_id, work) + then, line), line
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "interrupted by SIGUSR2"


def test_a_job_the_launcher_does_not_requeue_says_why_and_how_to_resume_its_run(work: Path):
    code, line, run, calls = interrupted_under(refuses, work)
    assert calls == [signal.SIGUSR2]
    assert code == 1  # a failed job: Hydra's exit
    run_id = run.info.run_id
    then = f"not requeued (timed-out too many times); `peftlab resume {run_id}` continues it"
    assert re.fullmatch(killed_at_a_checkpoint(run_id, work) + re.escape(then), line), line
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "interrupted by SIGUSR2"
