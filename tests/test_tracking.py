import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
from helpers.cluster import free_port
from helpers.configs import ROOT
from helpers.runners import run_train
from helpers.stores import new_store
from mlflow.entities import DatasetInput
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.dbmodels.models import SqlDataset
from mlflow.tracking import MlflowClient
from mlflow.utils.rest_utils import verify_rest_response
from sqlalchemy import event
from sqlalchemy.orm import Session

from peftlab import names, tracking
from peftlab.config import TrackingConfig
from peftlab.errors import PeftlabError
from peftlab.schema import DatasetConfig


def store(tmp_path: Path, experiment: str = "exp") -> TrackingConfig:
    """A store under ``tmp_path``, its schema made (a copy of the session's empty store)."""
    new_store(tmp_path)
    return TrackingConfig(
        uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        experiment=experiment,
        artifact_location=str(tmp_path / "artifacts"),
    )


def test_store_and_experiment_are_created_once(tmp_path: Path):
    cfg = TrackingConfig(
        uri=f"sqlite:///{tmp_path}/nested/mlflow.db",
        experiment="exp",
        artifact_location=str(tmp_path / "artifacts"),
    )
    first, second = tracking.use_store(cfg), tracking.use_store(cfg)
    assert first == second
    assert (tmp_path / "nested" / "mlflow.db").is_file()
    location = MlflowClient(cfg.uri).get_experiment(first).artifact_location
    assert location == (tmp_path / "artifacts").resolve().as_uri()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://127.0.0.1:{port}", "tracking.uri='http://127.0.0.1:{port}': no MLflow server "
         "answers there ([Errno 111] Connection refused); start one"),
        ("bogus://x", "tracking.uri='bogus://x' is not allowed: an MLflow store URI"),
        ("postgresql://user:secret@127.0.0.1:{port}/db", "tracking.uri='postgresql://user:***@"
         "127.0.0.1:{port}/db': cannot connect to the database (connection failed: connection "
         'to server at "127.0.0.1", port {port} failed: Connection refused); check its host'),
    ],
)  # fmt: skip
def test_a_store_that_cannot_be_used_is_one_line_within_seconds(uri: str, message: str):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(PeftlabError) as error:
        tracking.use_store(TrackingConfig(uri=uri.format(port=port)))
    assert time.monotonic() - started < 5  # not MLflow's minutes of retries
    assert str(error.value).startswith(message.format(port=port))
    assert "\n" not in str(error.value)


DATABASE_ERROR = "error: tracking.uri='postgresql://user:***@127.0.0.1:{port}/db': cannot connect"


@pytest.mark.process
@pytest.mark.parametrize(
    ("overrides", "failing"),
    [
        (["tracking.uri={uri}"], 1),  # a run
        (["-m", "tracking.uri={uri}", "peft.num_virtual_tokens=2,4"], 1),  # the sweep's parent
        (["-m", "tracking.uri={uri},{uri}"], 2),  # each job: Hydra prints the job's overrides
    ],
    ids=["run", "sweep", "swept-uri"],
)
def test_a_database_that_cannot_be_reached_is_one_line_its_password_masked(
    tmp_path: Path, overrides: list[str], failing: int
):
    """python train.py, as typed by a user with a wrong port: not MLflow's minutes of engine
    retries and a traceback; no line carries the password, Hydra's own included."""
    port = free_port()  # nothing listens there
    uri = f"postgresql://user:secret@127.0.0.1:{port}/db"
    typed = [item.format(uri=uri) for item in overrides]
    started = time.monotonic()
    result = run_train(*typed, f"hydra.sweep.dir={tmp_path}/multirun", cwd=tmp_path)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert elapsed < 10 * failing, elapsed  # each failing start, its imports included
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(DATABASE_ERROR.format(port=port)), output[-3000:]
    assert "secret" not in output
    assert "Traceback" not in output
    if failing == 2:  # the sweep's parent is in the default store; its jobs fail
        masked = r"tracking.uri=postgresql\\://user\\:***@127.0.0.1"
        assert f"Error executing job with overrides: ['{masked}" in result.stderr


def test_a_wrong_database_password_is_one_line_within_seconds(postgres):
    uri = postgres.url("postgres").replace(postgres.password, "wrong-pw")
    started = time.monotonic()
    with pytest.raises(PeftlabError) as error:
        tracking.use_store(TrackingConfig(uri=uri))
    assert time.monotonic() - started < 5
    assert str(error.value).startswith(
        f"tracking.uri='postgresql+psycopg://peftlab:***@127.0.0.1:{postgres.port}/postgres': "
        "cannot connect to the database (connection failed: connection to server at "
        f'"127.0.0.1", port {postgres.port} failed: FATAL: password authentication failed for '
        'user "peftlab"); check its host, port, database, user and password'
    )
    assert "wrong-pw" not in str(error.value)


def test_run_ends_finished(tmp_path: Path):
    cfg = store(tmp_path)
    tracking.use_store(cfg)
    with tracking.run(cfg, "ok", {"model": "tiny"}) as active:
        mlflow.log_metric(names.EVAL_LOSS, 1.0)
    run = MlflowClient(cfg.uri).get_run(active.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["model"] == "tiny"


def test_run_ends_failed_with_the_error_on_exception(tmp_path: Path):
    cfg = store(tmp_path)
    tracking.use_store(cfg)
    with pytest.raises(RuntimeError), tracking.run(cfg, "boom", {}) as active:
        raise RuntimeError("out of memory")
    run = MlflowClient(cfg.uri).get_run(active.info.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: out of memory"


def test_a_dead_workers_run_ends_killed_naming_it_and_an_ended_one_keeps_its_status(
    tmp_path: Path,
):
    cfg = store(tmp_path)
    client = MlflowClient(cfg.uri)
    experiment_id = tracking.use_store(cfg)
    running = client.create_run(experiment_id).info.run_id
    finished = client.create_run(experiment_id).info.run_id
    client.set_terminated(finished, "FINISHED")  # its worker died before telling its trial
    for run_id in (running, finished):
        tracking.end_dead_workers_run(client, run_id, "node-3:4242")
    for run_id, status in ((running, "KILLED"), (finished, "FINISHED")):
        run = client.get_run(run_id)
        assert run.info.status == status
        assert run.data.tags[names.WORKER_DIED_TAG] == "node-3:4242"


def retried_for_s() -> float:
    """How long MLflow's client, as the variables now say, retries a request that finds no
    server: urllib3's sleeps between its attempts (MLflow's jitter of up to 1 s left out)."""
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    )
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError
    from urllib3.util.retry import Retry

    retry = Retry(
        total=MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(),
        backoff_factor=MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(),
    )
    slept = 0.0
    try:
        while True:  # each attempt refused, until urllib3 gives up
            retry = retry.increment(method="POST", url="/", error=ConnectTimeoutError())
            slept += retry.get_backoff_time()
    except MaxRetryError:
        return slept


@pytest.mark.parametrize(
    ("patience", "seconds"), [(tracking.AT_ONCE, 2), (tracking.IN_A_SWEEP, 30)]
)
def test_a_sweeps_requests_outlast_a_server_restart_a_runs_fail_within_seconds(
    monkeypatch, patience, seconds
):
    for variable in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.setenv(variable, "0")  # restored after the test
    tracking.retry_requests("http://127.0.0.1:5000", patience)
    assert retried_for_s() == seconds


class Healthy(BaseHTTPRequestHandler):
    """A server's /health, answered."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_sweeps_job_waits_for_a_server_that_comes_back():
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    with pytest.raises(PeftlabError, match="no MLflow server answers there"):
        tracking.require_server(uri, tracking.AT_ONCE.wait_s)  # a run's: at once
    back: list[ThreadingHTTPServer] = []

    def restarted():
        back.append(ThreadingHTTPServer(("127.0.0.1", port), Healthy))
        back[0].serve_forever()

    restart = threading.Timer(2.0, restarted)
    restart.daemon = True  # gone with the test, should it fail
    restart.start()
    started = time.monotonic()
    tracking.require_server(uri, wait_s=tracking.IN_A_SWEEP.wait_s)
    assert 2.0 <= time.monotonic() - started < 10
    back[0].shutdown()
    back[0].server_close()


def test_flatten_gives_dotted_keys():
    nested = {"peft": {"num_virtual_tokens": 4}, "generation": {"prompts": ["a", "b"]}, "x": None}
    assert tracking.flatten(nested) == {
        "peft.num_virtual_tokens": "4",
        "generation.prompts": "['a', 'b']",
        "x": "None",
    }


def test_ui_hint_points_at_the_run(tmp_path: Path):
    cfg = store(tmp_path)
    tracking.use_store(cfg)
    with tracking.run(cfg, "hint", {}) as active:
        pass
    assert active.info.run_id in tracking.ui_hint(cfg, active)
    assert "make ui" in tracking.ui_hint(cfg, active)
    assert tracking.ui_hint(cfg, active).endswith("?workflowType=machine_learning")


def test_a_hub_dataset_is_logged_with_its_id_split_and_revision(tmp_path: Path):
    cfg = store(tmp_path)
    tracking.use_store(cfg)
    hub = DatasetConfig(
        name="awesome-chatgpt-prompts", path="fka/awesome-chatgpt-prompts", revision="v1.0",
        text_column="prompt", eval_split="test",
    )  # fmt: skip
    rows = pd.DataFrame({"prompt": ["x", "y", "z"]})
    with tracking.run(cfg, "data", {}) as active:
        tracking.log_dataset(rows, hub, "training")
        tracking.log_dataset(rows.head(2), hub, "evaluation")
    inputs = MlflowClient(cfg.uri).get_run(active.info.run_id).inputs.dataset_inputs
    logged = {i.tags[0].value: i.dataset for i in inputs}  # by context
    sources = {context: json.loads(d.source) for context, d in logged.items()}
    assert {d.source_type for d in logged.values()} == {"hugging_face"}
    assert (sources["training"]["path"], sources["training"]["revision"]) == (
        "fka/awesome-chatgpt-prompts",
        "v1.0",
    )
    assert (sources["training"]["split"], sources["evaluation"]["split"]) == ("train", "test")
    assert json.loads(logged["training"].profile)["num_rows"] == 3
    assert json.loads(logged["evaluation"].profile)["num_rows"] == 2


def test_a_chat_dataset_is_logged_with_its_messages_as_json(tmp_path: Path):
    cfg = store(tmp_path)
    tracking.use_store(cfg)
    chats = DatasetConfig(name="chats", data_files="/x.jsonl", format="chat")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    with tracking.run(cfg, "data", {}) as active:
        tracking.log_dataset(pd.DataFrame({"messages": [messages]}), chats, "training")
    (logged,) = MlflowClient(cfg.uri).get_run(active.info.run_id).inputs.dataset_inputs
    assert json.loads(logged.dataset.schema)["mlflow_colspec"] == [
        {"type": "string", "name": "messages", "required": True}
    ]


@contextmanager
def another_job_inserts_it_first(uri: str, other_run_id: str) -> Iterator[list[str]]:
    """Within: the first dataset row this process is about to insert, another job's run
    (``other_run_id``, same experiment) inserts first, after this job looked for it and found
    none: the race of jobs started at once, on a real SQLite store. Yields the names raced."""
    raced: list[str] = []

    def insert_first(session: Session, flush_context, instances) -> None:
        pending = [row for row in session.new if isinstance(row, SqlDataset)]
        if raced or not pending:
            return
        raced.extend(row.name for row in pending)  # before: the other job's own flush passes
        datasets = [DatasetInput(row.to_mlflow_entity()) for row in pending]
        MlflowClient(uri).log_inputs(other_run_id, datasets=datasets)

    event.listen(Session, "before_flush", insert_first)
    try:
        yield raced
    finally:
        event.remove(Session, "before_flush", insert_first)


def counted_log_input(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The contexts of each call of ``mlflow.log_input`` from now on, which it still makes."""
    calls: list[str] = []
    real = mlflow.log_input

    def counted(dataset, context=None, *args, **kwargs):
        calls.append(context)
        return real(dataset, context, *args, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", counted)
    return calls


ROWS = pd.DataFrame({"prompt": ["a", "b", "c"]})
CSV_ROWS = DatasetConfig(name="d", data_files="/x.csv", text_column="prompt")


def test_a_dataset_another_job_inserted_first_is_logged_on_the_next_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    cfg = store(tmp_path)
    experiment_id = tracking.use_store(cfg)
    client = MlflowClient(cfg.uri)
    other = client.create_run(experiment_id).info.run_id
    calls = counted_log_input(monkeypatch)
    with (
        tracking.run(cfg, "data", {}) as active,
        another_job_inserts_it_first(cfg.uri, other) as raced,
    ):
        tracking.log_dataset(ROWS, CSV_ROWS, "training")
    # SQLite refused the first insert (UNIQUE constraint failed); the second found the row.
    assert raced == ["d"] and calls == ["training", "training"]
    (logged,) = client.get_run(active.info.run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.tags[0].value) == ("d", "training")
    with sqlite3.connect(tmp_path / "mlruns" / "mlflow.db") as db:
        assert db.execute("SELECT count(*) FROM datasets").fetchone() == (1,)


def test_an_error_other_than_a_duplicate_row_is_raised_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    cfg = store(tmp_path)
    tracking.use_store(cfg)
    client = MlflowClient(cfg.uri)
    calls = counted_log_input(monkeypatch)
    with tracking.run(cfg, "data", {}) as active:
        client.delete_run(active.info.run_id)  # an error no retry mends: the run is gone
        with pytest.raises(MlflowException, match="must be in the 'active' state"):
            tracking.log_dataset(ROWS, CSV_ROWS, "training")
        client.restore_run(active.info.run_id)  # so that the run can end
    assert calls == ["training"]


CPU_SAMPLES = "system/cpu_utilization_percentage"
MEMORY_SAMPLES = "system/system_memory_usage_megabytes"


@pytest.mark.parametrize("enabled", [True, False])
def test_system_metrics_are_sampled_while_a_run_lasts(tmp_path: Path, enabled: bool):
    from mlflow.tracking.fluent import run_id_to_system_metrics_monitor as samplers

    interval = 0.2
    cfg = replace(store(tmp_path), system_metrics=enabled, system_metrics_interval_s=interval)
    tracking.use_store(cfg)
    client = MlflowClient(cfg.uri)
    with tracking.run(cfg, "busy", {}) as active:
        run_id = active.info.run_id
        # MLflow's own sampler of this run, at the interval set; none at all when off.
        sampler = samplers.get(run_id)
        assert (sampler is not None) == enabled
        assert sampler is None or sampler.sampling_interval == interval
        deadline = time.monotonic() + (15 if enabled else 3 * interval)
        history: list = []
        while time.monotonic() < deadline and len(history) < 3:
            time.sleep(interval / 2)
            history = client.get_metric_history(run_id, CPU_SAMPLES)
    run = client.get_run(run_id)
    logged = {key for key in run.data.metrics if key.startswith("system/")}
    if not enabled:
        assert not logged
        return
    assert {CPU_SAMPLES, MEMORY_SAMPLES} <= logged
    stamps = [m.timestamp for m in sorted(history, key=lambda m: m.step)]
    assert len(stamps) >= 3  # samples go on coming while the run lasts
    assert run.info.start_time <= stamps[0] and stamps[-1] <= run.info.end_time
    assert min(b - a for a, b in pairwise(stamps)) >= 0.75 * interval * 1000  # its interval
    # Plausible values: a share of the machine's CPUs, at most the memory the kernel reports.
    memory_kb = int(re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)[1])
    assert 0 < run.data.metrics[MEMORY_SAMPLES] <= memory_kb / 1024
    assert all(0 <= m.value <= 100 * os.cpu_count() for m in history)


def test_the_tests_run_in_the_locked_environment():
    """constraints.txt is what `make setup` installs: it must be what these tests pass with."""

    def pins(text: str) -> dict[str, str]:
        pairs = (line.split("==", 1) for line in text.splitlines() if "==" in line)
        return {name.lower().replace("_", "-"): version for name, version in pairs}

    locked = pins((ROOT / "constraints.txt").read_text())
    installed = pins(tracking.installed_packages())
    drifted = {n: (v, installed.get(n)) for n, v in locked.items() if installed.get(n) != v}
    assert not drifted, f"installed differs from constraints.txt (run `make lock`): {drifted}"


LOG_AT_ONCE = """
import sys
import mlflow
import pandas as pd
from peftlab import tracking
from peftlab.config import TrackingConfig
from peftlab.schema import DatasetConfig
from peftlab.errors import PeftlabError

cfg = TrackingConfig(uri=sys.argv[1], experiment=sys.argv[2], artifact_location=None)
tracking.use_store(cfg)
rows = pd.DataFrame({"prompt": ["a", "b", "c"]})
source = DatasetConfig(name="d", data_files="/x.csv", text_column="prompt")
with mlflow.start_run():
    tracking.log_dataset(rows, source, "training")
"""


def test_jobs_starting_at_once_on_a_team_server_share_experiment_and_dataset(
    mlflow_on_postgres: str,
):
    """Jobs of sweeps started at the same moment create one new experiment and log the same
    rows into it: the database refuses the losers' rows; each job still ends well."""
    for attempt in range(3):
        experiment = f"at-once-{attempt}"
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", LOG_AT_ONCE, mlflow_on_postgres, experiment],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        errors = [process.communicate(timeout=300)[1] for process in processes]
        assert [p.returncode for p in processes] == [0] * 4, "\n".join(errors)[-3000:]
        client = MlflowClient(mlflow_on_postgres)
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id])
        assert len(runs) == 4
        assert {len(run.inputs.dataset_inputs) for run in runs} == {1}


def test_an_experiment_keeps_its_artifacts_where_its_store_is(tmp_path: Path):
    """Beside a SQLite store's database; on a server, where the server keeps them (it proxies
    the uploads), never a folder of the machine a job happened to start on."""
    local = TrackingConfig(uri=f"sqlite:///{tmp_path}/runs/mlflow.db")
    assert tracking.artifact_location(local) == (tmp_path / "runs" / "artifacts").as_uri()
    assert tracking.artifact_location(TrackingConfig(uri="http://mlflow:5000")) is None
    chosen = TrackingConfig(uri="http://mlflow:5000", artifact_location=str(tmp_path / "a"))
    assert tracking.artifact_location(chosen) == (tmp_path / "a").as_uri()


def refusal(status: int) -> MlflowException:
    """What MLflow's REST client raises for a basic-auth server's answer to a user it turns
    away: a plain-text body, the HTTP status its only code."""
    response = requests.Response()
    response.status_code = status
    response._content = b"You are not authenticated. Please see the documentation."
    with pytest.raises(MlflowException) as raised:
        verify_rest_response(response, "/api/2.0/mlflow/experiments/get-by-name")
    return raised.value


@pytest.mark.parametrize(
    ("status", "user", "who"),
    [
        (401, "ada", "MLFLOW_TRACKING_USERNAME='ada' (HTTP 401: wrong user name or password)"),
        (401, None, "a request without a user (HTTP 401: wrong user name or password)"),
        (403, "ada", "MLFLOW_TRACKING_USERNAME='ada' (HTTP 403: this user may not use that "
         "experiment)"),
    ],
)  # fmt: skip
def test_a_server_that_refuses_the_user_is_one_line_naming_who(
    monkeypatch, status: int, user: str | None, who: str
):
    """Without a server: the error its refusal becomes, raised within ``admitted``."""
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    if user:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    uri = "http://127.0.0.1:5000"
    with pytest.raises(PeftlabError) as raised, tracking.admitted(uri):
        raise refusal(status)
    assert str(raised.value) == (
        f"tracking.uri='http://127.0.0.1:5000': the server refused {who}; set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of that server"
    )
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # one line
    missing = refusal(404)
    with pytest.raises(MlflowException) as passed, tracking.admitted(uri):
        raise missing
    assert passed.value is missing  # any other error of the server is its own


def test_two_jobs_creating_one_experiment_at_once_both_use_it(tmp_path: Path):
    """SQLite refuses the second row of one name ("UNIQUE constraint failed"): the job whose
    row was refused takes the experiment the other made."""
    cfg = store(tmp_path, "at-once")
    mlflow.set_tracking_uri(cfg.uri)
    start = threading.Barrier(2)
    made: dict[int, str | BaseException] = {}

    def job(number: int) -> None:
        start.wait()
        try:
            made[number] = tracking.create_experiment(cfg)
        except BaseException as error:  # the test's failure, shown below
            made[number] = error

    jobs = [threading.Thread(target=job, args=(n,)) for n in range(2)]
    for thread in jobs:
        thread.start()
    for thread in jobs:
        thread.join(timeout=30)
    experiment = MlflowClient(cfg.uri).get_experiment_by_name("at-once")
    assert made == {0: experiment.experiment_id, 1: experiment.experiment_id}
    assert experiment.tags[names.EXPERIMENT_KIND_TAG] == names.EXPERIMENT_KIND


def test_an_experiment_tagged_by_another_job_at_the_same_moment_is_used(tmp_path: Path):
    """An experiment made elsewhere, which this job tags as peftlab's while another job does:
    SQLite refuses the second tag row. A trigger stands for the other job's row landing first."""
    cfg = store(tmp_path, "made-elsewhere")
    experiment_id = MlflowClient(cfg.uri).create_experiment("made-elsewhere")
    with sqlite3.connect(tmp_path / "mlruns" / "mlflow.db") as database:
        database.execute(
            "CREATE TRIGGER other_job BEFORE INSERT ON experiment_tags BEGIN "
            "INSERT INTO experiment_tags VALUES (NEW.key, NEW.value, NEW.experiment_id); END"
        )
    assert tracking.use_store(cfg) == experiment_id
    with pytest.raises(MlflowException, match="UNIQUE constraint failed"):  # what it met
        mlflow.set_experiment_tag(names.EXPERIMENT_KIND_TAG, names.EXPERIMENT_KIND)
