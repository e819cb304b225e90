"""Chaos: a search's workers SIGKILLed mid-trial and its MLflow server killed and restarted
mid-search. The study still ends with its budget of trials, each counted once; no run is left
RUNNING; the parent's best is the study's."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers.cluster import free_port
from helpers.configs import ROOT, tiny_overrides
from helpers.servers import MLFLOW_SERVER_ENV, serving
from helpers.session_runs import SEARCH
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from peftlab import names
from peftlab import study as studies

pytestmark = pytest.mark.process  # a PostgreSQL, an MLflow server and the search's workers

N_TRIALS = 12
HEARTBEAT_S = 2  # a killed worker's trial is failed and retried 6 s after its last beat


def mlflow_server(store: str, artifacts: Path, port: int):
    """``mlflow server`` over ``store``: started again with the same port and store, it is the
    same server. Its own process group (its web server is a child of its own)."""
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
        "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    return serving(command, f"http://127.0.0.1:{port}/health", env=MLFLOW_SERVER_ENV)


def start_worker(model: Path, work: Path, number: int, storage: str, server: str):
    """One worker of the search, as each machine of a team starts it; its output to a file."""
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", *tiny_overrides(model, work),
        *SEARCH[:4], "trainer.num_train_epochs=1", f"hydra.sweeper.n_trials={N_TRIALS}",
        f"hydra.sweeper.storage='{storage}'", f"hydra.sweeper.heartbeat_s={HEARTBEAT_S}",
        f"tracking.uri={server}", "tracking.artifact_location=null",
        "tracking.system_metrics=false", f"hydra.sweep.dir={work}/multirun/{number}",
    ]  # fmt: skip
    output = (work / f"worker-{number}.log").open("w")
    return subprocess.Popen(command, cwd=work, stdout=output, stderr=subprocess.STDOUT)


def the_study(storage: str) -> optuna.Study:
    """The search's study, once its first worker has created it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            return optuna.load_study(study_name="peftlab", storage=studies.open_storage(storage))
        except KeyError:  # not created yet
            time.sleep(0.5)
    raise TimeoutError("no worker created the study within 120 s")


def kill_mid_trial(study: optuna.Study, worker: subprocess.Popen) -> str:
    """SIGKILL the worker at a random moment of its first or second trial, once the trial's run
    has started; returns the worker's name (host:pid). Till then it shares the search's work."""
    name, after = f"{socket.gethostname()}:{worker.pid}", random.randint(0, 1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker ended before it was killed"
        own = [t for t in study.get_trials() if t.user_attrs.get(studies.WORKER_ATTR) == name]
        if sum(t.state.is_finished() for t in own) >= after and any(
            t.state == TrialState.RUNNING and studies.RUN_ATTR in t.user_attrs for t in own
        ):
            time.sleep(random.uniform(0, 1))  # the job's run lasts seconds: still within it
            worker.kill()
            worker.wait()
            return name
        time.sleep(0.2)
    raise TimeoutError(f"worker {name} ran no trial within 120 s")


def counted_retry(trials: list, number: int):
    """The counted trial that ran abandoned trial ``number``'s parameters again: its retry, or
    the retry's retry where the retry's worker was the next one killed."""
    retries = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    retry = retries.get(number)
    while retry is not None and not studies.counts_toward_budget(retry):
        retry = retries.get(retry.number)
    return retry


@pytest.fixture
def study_storage(request, postgres, tmp_path: Path) -> str:
    if request.param == "journal":
        return f"journal:{tmp_path}/study.journal"
    return postgres.create_database(f"chaos_{tmp_path.name[-12:].lower()}")


@pytest.mark.parametrize("study_storage", ["postgresql", "journal"], indirect=True)
def test_killed_workers_and_a_restarted_server_leave_the_study_whole(
    study_storage: str, postgres, tiny_bloom: Path, tmp_path: Path
):
    store = postgres.create_database(f"mlflow_{tmp_path.name[-12:].lower()}")
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    with mlflow_server(store, tmp_path / "artifacts", port) as first:
        workers = [start_worker(tiny_bloom, tmp_path, i, study_storage, server) for i in range(3)]
        study = the_study(study_storage)
        dead = [kill_mid_trial(study, workers[0])]
        os.killpg(first.pid, signal.SIGKILL)  # the server goes, mid-search
        first.wait()
    with mlflow_server(store, tmp_path / "artifacts", port):  # back on its port and store
        dead.append(kill_mid_trial(study, workers[1]))
        assert workers[2].wait(timeout=600) == 0, (tmp_path / "worker-2.log").read_text()[-3000:]
        client = MlflowClient(server)
        runs = client.search_runs([client.get_experiment_by_name("peftlab").experiment_id])

    trials = study.get_trials()
    counted = [t for t in trials if studies.counts_toward_budget(t)]
    assert len(counted) == N_TRIALS
    assert {t.state for t in counted} <= {TrialState.COMPLETE, TrialState.PRUNED}
    by_id = {run.info.run_id: run for run in runs}
    assert [run.info.status for run in runs if run.info.status == "RUNNING"] == []
    counted_runs = [by_id[t.user_attrs[studies.RUN_ATTR]] for t in counted]
    assert len({run.info.run_id for run in counted_runs}) == N_TRIALS  # none counted twice
    for trial, run in zip(counted, counted_runs, strict=True):
        assert run.data.tags[names.JOB_NUM_TAG] == str(trial.number)
        assert run.info.status == "FINISHED" and names.WORKER_DIED_TAG not in run.data.tags
    # Each dead worker's trial: failed, not counted, retried; its run KILLED, naming it.
    for name in dead:
        (left,) = [t for t in trials if t.user_attrs.get(studies.WORKER_ATTR) == name
                   and t.user_attrs.get(studies.NOT_COUNTED_ATTR) == "abandoned"]  # fmt: skip
        assert left.state == TrialState.FAIL
        retried = counted_retry(trials, left.number)
        assert retried is not None and retried.params == left.params, [
            (t.number, t.state.name, t.user_attrs) for t in trials
        ]
        run = by_id[left.user_attrs[studies.RUN_ATTR]]
        assert run.info.status == "KILLED"
        assert run.data.tags[names.WORKER_DIED_TAG] == name
    (parent,) = [run for run in runs if run.data.tags.get(names.SWEEP_TAG) == "true"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics[names.BEST_EVAL_LOSS] == study.best_value
    (best,) = [t for t in counted if t.user_attrs[studies.RUN_ATTR] == parent.data.tags[
        names.BEST_RUN_ID_TAG]]  # fmt: skip
    assert best.value == study.best_value  # of the trials tied for it (two learning rates)
    assert parent.data.tags[names.FINISHED_JOBS_TAG] == str(N_TRIALS)
