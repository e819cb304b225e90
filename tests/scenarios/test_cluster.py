"""Sweeps as Slurm jobs on a one-node cluster with accounting (cluster.py), tracked by a team's
MLflow server over PostgreSQL: one job per sweep job, failures, preemption and requeue."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
from helpers import cluster
from helpers.configs import ROOT, tiny_overrides
from helpers.runners import run_tiny
from mlflow.tracking import MlflowClient

from peftlab import names

pytestmark = pytest.mark.process  # Slurm's daemons and jobs

SLURM = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=6",
]


def slurm_sweep(slurm, model: Path, work: Path, server: str, experiment: str, *overrides: str):
    """``train.py -m`` with the Slurm launcher, tracked by ``server``; started, not waited for."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *tiny_overrides(model, work), *SLURM,
         f"tracking.uri={server}", "tracking.artifact_location=null",
         f"tracking.experiment={experiment}", f"hydra.sweep.dir={work}/multirun", *overrides],
        cwd=work, env=slurm.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finished(process: subprocess.Popen, returncode: int = 0) -> str:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == returncode, stderr[-3000:]
    return stderr


def sweep_on(server: str, experiment: str):
    """The sweep's parent run and its children by job number, from the server."""
    client = MlflowClient(server)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(names.SWEEP_TAG) == "true"]
    children = [r for r in runs if r.data.tags.get(names.PARENT_TAG) == parent.info.run_id]
    assert len(children) + 1 == len(runs)  # every run exactly once
    return client, parent, sorted(children, key=lambda r: int(r.data.tags[names.JOB_NUM_TAG]))


def slurm_jobs(work: Path) -> list[str]:
    """The Slurm job ids of the sweep's jobs in job order: submitit's folder per job (a job
    array's ``ARRAY_TASK``, or a lone job's id)."""
    folder = work / "multirun" / ".submitit"
    found = [p.name for p in folder.glob("*") if re.fullmatch(r"\d+(_\d+)?", p.name)]
    tasks = [name for name in found if "_" in name]  # an array's own folder beside its tasks
    return sorted(tasks or found, key=lambda name: int(name.rpartition("_")[2]))


UNENDED = {"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED"}


def accounted(slurm, job_ids: list[str]) -> dict[str, str]:
    """Each job's final state as Slurm's accounting (sacct, through slurmdbd) has it: slurmdbd
    records a job's end a moment after the job's process has ended."""

    def ended() -> dict[str, str] | None:
        out = slurm.command("sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids))
        states = dict(line.split("|") for line in out.split())
        return None if UNENDED & set(states.values()) else states

    return wait_for(ended, f"jobs {','.join(job_ids)} not ended in sacct", timeout=60)


def test_the_cluster_answers_accounting_and_stops_every_daemon_it_started(slurm):
    """A second cluster beside the session's: sacct answers (slurmdbd over MariaDB), and
    stopping it leaves none of its processes running and nothing in its folder."""
    home = Path(tempfile.mkdtemp(prefix="peftlab-slurm-"))
    started = cluster.start(home)
    pids = json.loads((home / "pids.json").read_text())
    assert set(pids) == {"munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"}
    assert "JobID" in started.command("sacct", "-o", "JobID")
    cluster.stop(home)
    assert not [name for name, pid in pids.items() if cluster.alive(pid)]
    assert not home.exists()


def test_a_sweep_runs_as_slurm_jobs_tracked_by_the_team_server(
    slurm, mlflow_on_postgres: str, tiny_bloom: Path, tmp_path: Path
):
    sweep = slurm_sweep(
        slurm, tiny_bloom, tmp_path, mlflow_on_postgres, "slurm-sweep",
        "peft=prompt-tuning,ia3", "dataset.text_column=prompt,nope",
        "hydra.launcher.timeout_min=30",
    )  # fmt: skip
    stderr = finished(sweep, returncode=1)  # as any sweep with a failed job, naming its error
    assert "dataset.text_column='nope' is not a column" in stderr
    client, parent, children = sweep_on(mlflow_on_postgres, "slurm-sweep")
    job_ids = slurm_jobs(tmp_path)
    assert len(job_ids) == len(children) == 4
    assert set(accounted(slurm, job_ids).values()) == {"COMPLETED"}

    statuses = {(c.data.params["peft.method"], c.data.params["dataset.text_column"]): c
                for c in children}  # fmt: skip
    good = [statuses["prompt_tuning", "prompt"], statuses["ia3", "prompt"]]
    bad = [statuses["prompt_tuning", "nope"], statuses["ia3", "nope"]]
    assert [c.info.status for c in good] == ["FINISHED", "FINISHED"]
    assert [c.info.status for c in bad] == ["FAILED", "FAILED"]
    assert all("dataset.text_column='nope' is not a column" in c.data.tags["error"] for c in bad)
    best = min(good, key=lambda c: c.data.metrics[names.EVAL_LOSS])
    assert parent.data.tags[names.BEST_RUN_ID_TAG] == best.info.run_id
    assert parent.data.metrics[names.BEST_EVAL_LOSS] == best.data.metrics[names.EVAL_LOSS]
    assert (parent.data.tags[names.FINISHED_JOBS_TAG], parent.data.tags[names.FAILED_JOBS_TAG]) == (
        "2",
        "2",
    )
    assert parent.info.status == "FAILED"  # as the sweep's exit code says

    # Through the server: curves, datasets, the adapter and a logged model that predicts.
    for run in good:
        assert len(client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)) >= 2
        assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"prompts-sample"}
        assert "adapter_model.safetensors" in {
            Path(f.path).name for f in client.list_artifacts(run.info.run_id, "adapter")
        }
    mlflow.set_tracking_uri(mlflow_on_postgres)
    model = mlflow.pyfunc.load_model(f"runs:/{best.info.run_id}/model")
    sample = json.loads(Path(best.data.tags[names.RUN_DIR_TAG], names.SAMPLES_FILE).read_text())[0]
    assert model.predict([sample["prompt"]]) == [sample["tuned"]]

    compared = subprocess.run(
        [sys.executable, "-m", "peftlab.cli", "--tracking-uri", mlflow_on_postgres, "compare",
         "--sweep", parent.info.run_id, "--out", str(tmp_path / "compare")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert (tmp_path / "compare" / "comparison.csv").is_file()


def wait_for(condition, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {timeout} s")


def job_state(slurm, job_id: str) -> str:
    return slurm.command("squeue", "-h", "-j", job_id, "-o", "%T", check=False).strip()


def release(slurm, job_id: str) -> None:
    """A requeued job waits ~2 minutes (its BeginTime) before it may start again: now, with
    the time it was submitted with."""
    wait_for(lambda: job_state(slurm, job_id) == "PENDING", f"job {job_id} requeued")
    slurm.command("scontrol", "update", f"JobId={job_id}", "StartTime=now", "TimeLimit=15")


def restarts(slurm, job_id: str) -> int:
    shown = slurm.command("scontrol", "show", "job", job_id)
    return int(shown.split("Restarts=")[1].split()[0])


def log_of_attempts(work: Path, job_id: str) -> str:
    """What the job's processes printed, every attempt (submitit appends)."""
    return (work / "multirun" / ".submitit" / job_id / f"{job_id}_0_log.err").read_text()


def test_preempted_and_timed_out_slurm_jobs_resume_their_runs_after_the_requeue(
    slurm, mlflow_on_postgres: str, tiny_bloom: Path, tmp_path: Path
):
    """Job 0 requeued by Slurm (`scontrol requeue`: SIGTERM); job 1 sent submitit's signal
    (USR2, as a preemption); job 2 brought near its time limit, so that Slurm sends that signal
    (`--signal`). Each ends its run at a step with a checkpoint and, requeued, continues that
    same MLflow run to the held-out loss of a run never interrupted."""
    training = ["trainer.num_train_epochs=60", "peft.num_virtual_tokens=2"]
    sweep = slurm_sweep(
        slurm, tiny_bloom, tmp_path, mlflow_on_postgres, "preempted", *training,
        "+tracking.tags.signal=requeue,usr2,time_limit", "hydra.launcher.mem_gb=4",
        # A USR2 within a job's last 10 minutes submitit counts as its time limit (requeued
        # only max_num_timeout times: 0 here); earlier, as a preemption (always requeued).
        "hydra.launcher.timeout_min=15",
    )  # fmt: skip
    job_ids = wait_for(lambda: len(slurm_jobs(tmp_path)) == 3 and slurm_jobs(tmp_path), "jobs")
    for job in ("0", "1", "2"):
        checkpoints = tmp_path / "multirun" / job / "trainer"
        wait_for(lambda c=checkpoints: list(c.glob("checkpoint-*")), "a first checkpoint")
    slurm.command("scontrol", "requeue", job_ids[0])
    slurm.command("scancel", "--signal=USR2", job_ids[1])
    # Slurm signals a job signal_delay_s (120 s) before its end: an end 125 s away is near.
    near = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 125))
    slurm.command("scontrol", "update", f"JobId={job_ids[2]}", f"EndTime={near}")
    for job_id in job_ids:
        release(slurm, job_id)
    finished(sweep)

    _, _, children = sweep_on(mlflow_on_postgres, "preempted")
    assert [c.data.tags["signal"] for c in children] == ["requeue", "usr2", "time_limit"]
    assert [restarts(slurm, j) for j in job_ids] == [1, 1, 1]
    signals = ["SIGTERM", "SIGUSR2", "SIGUSR2"]
    for job_id, sig in zip(job_ids, signals, strict=True):
        printed = log_of_attempts(tmp_path, job_id)
        assert f"interrupted by {sig} while training" in printed
        assert ("the requeued job continues it" in printed) == (sig == "SIGUSR2")
    alone = run_tiny(tiny_bloom, tmp_path, *training)
    client = MlflowClient(mlflow_on_postgres)
    for child in children:
        log = Path(child.data.tags[names.RUN_DIR_TAG], "train.log").read_text()
        assert f"Found unfinished run {child.info.run_id} (KILLED)" in log
        assert child.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, names.TRAIN_LOSS)]
        assert len(steps) == len(set(steps))  # no step logged twice
        assert child.data.metrics[names.EVAL_LOSS] == pytest.approx(alone.eval_loss, abs=1e-4)


def test_a_slurm_job_of_two_tasks_trains_data_parallel(
    slurm, mlflow_on_postgres: str, tiny_bloom: Path, tmp_path: Path
):
    """hydra.launcher.tasks_per_node=2: one job, two processes (torch.distributed over gloo),
    one run, trained as one process would on the same global batch."""
    sweep = slurm_sweep(
        slurm, tiny_bloom, tmp_path, mlflow_on_postgres, "two-tasks",
        "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=30",
        "trainer.per_device_train_batch_size=2",
    )  # fmt: skip
    finished(sweep)
    _, _, (run,) = sweep_on(mlflow_on_postgres, "two-tasks")
    assert run.info.status == "FINISHED"
    (job_id,) = slurm_jobs(tmp_path)
    logs = tmp_path / "multirun" / ".submitit" / job_id
    assert (logs / f"{job_id}_1_log.out").is_file()  # the second task's
    alone = run_tiny(tiny_bloom, tmp_path, "trainer.per_device_train_batch_size=4")
    assert run.data.metrics[names.EVAL_LOSS] == pytest.approx(alone.eval_loss, abs=1e-4)
    assert run.data.metrics[names.TRAIN_STEPS] == alone_steps(tmp_path)


def alone_steps(work: Path) -> float:
    return json.loads((work / "run" / names.METRICS_FILE).read_text())[names.TRAIN_STEPS]
