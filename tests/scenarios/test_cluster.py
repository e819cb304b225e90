"""Sweeps as Slurm jobs on a one-node cluster with accounting (cluster.py), tracked by a team's
MLflow server over PostgreSQL: one job per sweep job, failures, preemption and requeue."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import psutil
import pytest
from helpers import cluster
from helpers.configs import ROOT, tiny_overrides
from helpers.runners import run_tiny
from mlflow.tracking import MlflowClient

from peftlab import names, training

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


def signalled_near_their_end(slurm, *job_ids: str) -> None:
    """Bring running jobs near their end, so that Slurm sends submitit's USR2 (signal_delay_s,
    120 s, before it: an end 125 s away is near). Slurm checks time limits every 30 s or so,
    time in which a job could finish: each is held stopped until the signal reaches it."""
    held = [job_process(job_id) for job_id in job_ids]
    for process in held:
        process.suspend()  # SIGSTOP; stopped a moment later
        wait_for(lambda p=process: p.status() == psutil.STATUS_STOPPED, "a stopped job")
    try:
        near = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 125))
        for job_id in job_ids:
            slurm.command("scontrol", "update", f"JobId={job_id}", f"EndTime={near}")
        for process in held:
            wait_for(lambda p=process: signalled(p), "Slurm's USR2", timeout=120)
    finally:
        for process in held:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.resume()


def job_process(job_id: str) -> psutil.Process:
    """The Python process that runs a task of the sweep's job array (submitit's)."""
    array, _, task = job_id.partition("_")

    def found() -> psutil.Process | None:
        for process in psutil.process_iter(["cmdline", "environ"]):
            command, env = process.info["cmdline"] or [""], process.info["environ"] or {}
            if (
                "submitit.core._submit" in command
                and Path(command[0]).name.startswith("python")  # not srun, which starts it
                and (env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")) == (array, task)
            ):
                return process
        return None

    return wait_for(found, f"job {job_id}'s process")


def signalled(process: psutil.Process) -> bool:
    """Whether Slurm's USR2 has reached the stopped process: waiting to be handled, or handled
    already (Slurm sends SIGCONT with it: the process goes on, or has ended)."""
    try:
        if process.status() != psutil.STATUS_STOPPED:
            return True
        status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
    except (psutil.NoSuchProcess, FileNotFoundError):
        return True
    masks = [int(line.split()[1], 16) for line in status if line.startswith(("SigPnd", "ShdPnd"))]
    return any(mask & (1 << (signal.SIGUSR2 - 1)) for mask in masks)


def step_of(checkpoint: Path | None) -> int:
    return -1 if checkpoint is None else int(checkpoint.name.rpartition("-")[2])


def test_requeued_slurm_jobs_resume_their_runs_and_one_past_max_num_timeout_says_how_to(
    slurm, mlflow_on_postgres: str, tiny_bloom: Path, tmp_path: Path
):
    """Job 0 requeued by Slurm (`scontrol requeue`: SIGTERM); jobs 1 and 2 brought near their
    time limit, so that Slurm sends submitit's signal (USR2, `--signal`), requeued once
    (max_num_timeout=1). Each ends its run at a step with a checkpoint and, requeued, continues
    that same MLflow run, to the held-out loss of a run never interrupted. Job 2, brought near
    its time limit again once it has resumed, is not requeued: its run ends KILLED at a new
    checkpoint, and its log and the sweep's closing line say so and name `peftlab resume`."""
    training_args = ["trainer.num_train_epochs=60", "peft.num_virtual_tokens=2"]
    sweep = slurm_sweep(
        slurm, tiny_bloom, tmp_path, mlflow_on_postgres, "preempted", *training_args,
        "+tracking.tags.signal=requeue,time_limit,twice", "hydra.launcher.mem_gb=4",
        # submitit counts a USR2 as the time limit once a job has run min(80%, all but 10
        # minutes) of timeout_min: with 10, every USR2 (a preemption with more).
        "hydra.launcher.timeout_min=10", "hydra.launcher.max_num_timeout=1",
    )  # fmt: skip
    job_ids = wait_for(lambda: len(slurm_jobs(tmp_path)) == 3 and slurm_jobs(tmp_path), "jobs")
    trainers = [tmp_path / "multirun" / job / names.TRAINER_DIR for job in ("0", "1", "2")]
    for trainer in trainers:
        wait_for(lambda t=trainer: training.last_checkpoint(t), "a first checkpoint")
    slurm.command("scontrol", "requeue", job_ids[0])
    signalled_near_their_end(slurm, job_ids[1], job_ids[2])
    for job_id in job_ids:
        release(slurm, job_id)
    stopped = step_of(training.last_checkpoint(trainers[2]))  # its next attempt's is further
    wait_for(lambda: step_of(training.last_checkpoint(trainers[2])) > stopped, "job 2 resumed")
    signalled_near_their_end(slurm, job_ids[2])
    stderr = finished(sweep, returncode=1)

    _, parent, children = sweep_on(mlflow_on_postgres, "preempted")
    assert [c.data.tags["signal"] for c in children] == ["requeue", "time_limit", "twice"]
    assert [restarts(slurm, j) for j in job_ids] == [1, 1, 1]
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED", "KILLED"]
    assert parent.info.status == "KILLED"  # not left RUNNING: a job's run is to be resumed
    run_id, last = children[2].info.run_id, training.last_checkpoint(trainers[2])
    assert step_of(last) > stopped  # of its requeued attempt: what `peftlab resume` takes
    not_requeued = (
        f"interrupted by SIGUSR2 while training: MLflow run {run_id} ended KILLED; last "
        f"checkpoint {last}; not requeued (timed-out too many times); `peftlab resume {run_id}` "
        "continues it"
    )
    assert_each_said_what_became_of_it(tmp_path, job_ids, stderr, not_requeued)
    assert_continued_where_they_stopped(mlflow_on_postgres, tiny_bloom, tmp_path, training_args)


def assert_each_said_what_became_of_it(work: Path, job_ids, stderr: str, not_requeued: str):
    """Each job's log, each attempt: requeued by whom; the sweep's closing line: job 2's last."""
    lines = stderr.splitlines()
    assert not_requeued in lines and "Traceback" not in stderr, stderr[-3000:]
    assert "+tracking.tags.signal=twice" in lines[lines.index(not_requeued) - 1]  # Hydra's
    printed = [log_of_attempts(work, job_id) for job_id in job_ids]
    assert "interrupted by SIGTERM while training" in printed[0]
    assert "the requeued job continues it" not in printed[0]  # no launcher's handler had a say
    assert "; the requeued job continues it" in printed[1]
    said = [line for line in printed[2].splitlines() if line.startswith("interrupted by")]
    assert said[0].endswith("; the requeued job continues it") and said[1:] == [not_requeued]


def assert_continued_where_they_stopped(server: str, model: Path, work: Path, training_args):
    """Each run of the sweep "preempted" continued by its requeued job, no step logged twice;
    the two that finished at the held-out loss of a run of the same training never interrupted."""
    alone = run_tiny(model, work, *training_args)
    client, _, children = sweep_on(server, "preempted")
    for child in children:
        log = Path(child.data.tags[names.RUN_DIR_TAG], "train.log").read_text()
        assert f"Found unfinished run {child.info.run_id} (KILLED)" in log
        steps = [m.step for m in client.get_metric_history(child.info.run_id, names.TRAIN_LOSS)]
        assert len(steps) == len(set(steps))  # no step logged twice
    for child in children[:2]:
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
