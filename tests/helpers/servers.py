"""Server processes for the tests, up once they answer: ``mlflow server`` on a test's store."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from helpers.cluster import free_port  # one helper for the tests and `make cluster`

# MLflow's server also starts a runner for its GenAI jobs (eight more processes, each importing
# mlflow) by default: nothing these tests look at, and seconds to start and stop every server.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextmanager
def serving(
    command: list[str],
    ready_url: str,
    env: dict[str, str] | None = None,
    stdout: Path | None = None,
):
    """A server process, up once ``ready_url`` answers 200 (within 120 s), stopped after; what
    it prints goes to the file ``stdout``, if given. It runs in a process group of its own, all
    of which is stopped: ``mlflow server`` runs its web server as a child, make and shells the
    commands they start. A group that does not stop within 30 s of SIGTERM is killed."""
    printed = stdout.open("w") if stdout is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=printed,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()[-3000:]
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise TimeoutError(f"{ready_url} did not answer within 120 s")
        yield process
    finally:
        stop_group(process)
        if stdout is not None:
            printed.close()


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process's group, SIGKILL if it has not ended within 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@contextmanager
def mlflow_server(work: Path):
    """``mlflow server`` on loopback over the store under ``work``; yields its base URL."""
    base = f"http://127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{work}/mlruns/mlflow.db",
        "--host", "127.0.0.1", "--port", base.rsplit(":", 1)[1], "--workers", "1",
    ]  # fmt: skip
    with serving(command, f"{base}/health", env=MLFLOW_SERVER_ENV):
        yield base
