"""Server processes for the tests, up once they answer: ``mlflow server`` on a test's store."""

from __future__ import annotations

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
    group: bool = False,
):
    """A server process, up once ``ready_url`` answers 200 (within 120 s), stopped after; what
    it prints goes to the file ``stdout``, if given. ``group``: the command starts the server
    as a child of its own (make, a shell), so the whole process group is stopped."""
    printed = stdout.open("w") if stdout is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=printed,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
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
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
        process.wait(timeout=30)
        if stdout is not None:
            printed.close()


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
