"""A team's MLflow server over PostgreSQL (``mlflow_on_postgres``, tests/helpers/services.py):
jobs of sweeps in parallel and at the same moment, each run exactly once and complete; a
database URI straight in ``tracking.uri``, its password written nowhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import pytest
from helpers.cluster import free_port
from helpers.configs import ROOT, tiny_overrides
from helpers.measures import reference_greedy
from helpers.servers import MLFLOW_SERVER_ENV, serving
from mlflow.tracking import MlflowClient
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from peftlab import names

pytestmark = pytest.mark.process  # an MLflow server and the jobs that log to it


def train(model: Path, work: Path, *overrides: str, env: dict[str, str] | None = None):
    """``train.py`` on a tiny model under ``work`` (``-m`` first: a sweep), started, not
    waited for."""
    multirun = ["-m"] if "-m" in overrides else []
    overrides = tuple(o for o in overrides if o != "-m")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *multirun, *tiny_overrides(model, work),
         f"hydra.run.dir={work}/outputs/run", f"hydra.sweep.dir={work}/multirun", *overrides],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def on(server: str, experiment: str) -> list[str]:
    return [f"tracking.uri={server}", "tracking.artifact_location=null",
            f"tracking.experiment={experiment}"]  # fmt: skip


def ended(process: subprocess.Popen, returncode: int = 0) -> tuple[str, str]:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == returncode, stderr[-3000:]
    return stdout, stderr


def sweeps_in(client: MlflowClient, experiment: str) -> dict[str, list]:
    """Each sweep's parent run id -> its children; every run of the experiment in one."""
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.data.tags.get(names.SWEEP_TAG) == "true"]
    children = {p.info.run_id: [] for p in parents}
    for run in runs:
        if run not in parents:
            children[run.data.tags[names.PARENT_TAG]].append(run)
    return {p.info.run_id: (p, children[p.info.run_id]) for p in parents}


def complete(client: MlflowClient, run) -> None:
    """A finished job's run holds its params, curves, datasets and adapter."""
    assert run.info.status == "FINISHED"
    assert "peft.num_virtual_tokens" in run.data.params
    assert len(client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)) >= 2
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"prompts-sample"}
    adapter = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "adapter")}
    assert "adapter_model.safetensors" in adapter


def best_is_right(parent, children) -> None:
    best = min(children, key=lambda c: c.data.metrics[names.EVAL_LOSS])
    assert parent.data.tags[names.BEST_RUN_ID_TAG] == best.info.run_id
    assert parent.data.metrics[names.BEST_EVAL_LOSS] == best.data.metrics[names.EVAL_LOSS]


def test_a_joblib_sweep_runs_two_jobs_at_a_time_into_the_server(
    mlflow_on_postgres: str, tiny_bloom: Path, tmp_path: Path
):
    sweep = train(
        tiny_bloom, tmp_path, "-m", "peft.num_virtual_tokens=1,2,3,4", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", *on(mlflow_on_postgres, "joblib"),
    )  # fmt: skip
    ended(sweep)
    client = MlflowClient(mlflow_on_postgres)
    ((parent, children),) = sweeps_in(client, "joblib").values()
    assert len(children) == 4
    for child in children:
        complete(client, child)
    best_is_right(parent, children)
    # Two at a time, really: some two runs were open at the same moment.
    spans = sorted((c.info.start_time, c.info.end_time) for c in children)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))

    mlflow.set_tracking_uri(mlflow_on_postgres)  # the logged model, loaded from the server
    best = client.get_run(parent.data.tags[names.BEST_RUN_ID_TAG])
    model = mlflow.pyfunc.load_model(f"runs:/{best.info.run_id}/model")
    prompts = ["I want you to act as", "There are two nice things"]
    # What the best run's adapter, downloaded from the server, writes: loaded by transformers
    # and peft themselves, decoded greedily token by token with the run's generation settings.
    adapter = client.download_artifacts(best.info.run_id, names.ADAPTER_DIR, str(tmp_path))
    base = AutoModelForCausalLM.from_pretrained(tiny_bloom)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bloom)
    tuned = PeftModel.from_pretrained(base, adapter).eval()
    params = best.data.params
    length, penalty = (int(params["generation.max_new_tokens"]),
                       float(params["generation.repetition_penalty"]))  # fmt: skip
    expected = [reference_greedy(tuned, tokenizer, p, length, penalty) for p in prompts]
    assert all(expected)
    assert model.predict(prompts) == expected


def test_two_sweeps_started_at_once_into_one_new_experiment(
    mlflow_on_postgres: str, tiny_bloom: Path, tmp_path: Path
):
    """Both processes create the experiment and log the same datasets at the same moment."""
    sweeps = [
        train(
            tiny_bloom,
            tmp_path / name,
            "-m",
            "peft.num_virtual_tokens=1,2",
            *on(mlflow_on_postgres, "two-at-once"),
        )  # fmt: skip
        for name in ("a", "b")
        if (tmp_path / name).mkdir() is None
    ]
    for sweep in sweeps:
        ended(sweep)
    client = MlflowClient(mlflow_on_postgres)
    found = sweeps_in(client, "two-at-once")
    assert len(found) == 2
    for parent, children in found.values():
        assert len(children) == 2
        for child in children:
            complete(client, child)
        best_is_right(parent, children)


def test_a_database_uri_in_tracking_uri_tracks_the_run_and_writes_its_password_nowhere(
    postgres, tiny_bloom: Path, tmp_path: Path
):
    """A one-job sweep: Hydra prints a sweep's overrides too."""
    store = postgres.create_database("direct")
    run = train(
        tiny_bloom, tmp_path, "-m", f"tracking.uri={store}",
        f"tracking.artifact_location={tmp_path}/a",
    )  # fmt: skip
    stdout, stderr = ended(run)
    assert f"{postgres.user}\\:***@" in stdout  # Hydra's line of the job, ':' escaped
    assert postgres.password not in stdout + stderr
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("peftlab").experiment_id])
    (only,) = [run for run in runs if names.PARENT_TAG in run.data.tags]
    assert only.info.status == "FINISHED"
    logs = [p.read_text() for p in (tmp_path / "multirun").rglob("*.log")]
    assert logs and all(postgres.password not in log for log in logs)
    assert only.data.params["tracking.uri"] == store.replace(postgres.password, "***")
    for run in runs:  # the sweep's parent too
        assert all(postgres.password not in v for v in [*run.data.params.values(),
                                                          *run.data.tags.values()])  # fmt: skip
    artifacts = [p for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert any(p.name == names.CONFIG_FILE for p in artifacts)  # the .hydra copies among them
    for artifact in artifacts:
        assert postgres.password.encode() not in artifact.read_bytes(), artifact


def basic_auth_server(postgres, tmp_path: Path):
    """``mlflow server --app-name basic-auth``: its admin from an auth config file."""
    config = tmp_path / "auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path}/auth.db\n"
        "admin_username = admin\nadmin_password = admin-pw-1234\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    base = f"http://127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
        "--backend-store-uri", postgres.create_database("authenticated"),
        "--artifacts-destination", str(tmp_path / "artifacts"),
        "--host", "127.0.0.1", "--port", base.rsplit(":", 1)[1], "--workers", "1",
    ]  # fmt: skip
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
           **MLFLOW_SERVER_ENV}  # fmt: skip
    return base, serving(command, f"{base}/health", env=env)


def test_a_server_with_basic_auth_takes_the_users_credentials_from_the_environment(
    postgres, tiny_bloom: Path, tmp_path: Path
):
    base, server = basic_auth_server(postgres, tmp_path)
    with server:
        made = httpx.post(
            f"{base}/api/2.0/mlflow/users/create",
            json={"username": "ada", "password": "ada-password-5678"},
            auth=("admin", "admin-pw-1234"),
        )
        assert made.status_code == 200, made.text
        user = {"MLFLOW_TRACKING_USERNAME": "ada", "MLFLOW_TRACKING_PASSWORD": "ada-password-5678"}
        env = {**os.environ, **user}
        stdout, stderr = ended(train(tiny_bloom, tmp_path, *on(base, "teamwork"), env=env))
        assert "ada-password-5678" not in stdout + stderr
        wrong = {**env, "MLFLOW_TRACKING_PASSWORD": "not-her-password"}
        _, stderr = ended(train(tiny_bloom, tmp_path, *on(base, "teamwork"), env=wrong), 1)
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: tracking.uri={base!r}: the server refused"), stderr[-2000:]
    assert "not-her-password" not in stderr
