"""One job on two processes, data-parallel through torch.distributed (gloo on this CPU):
launched by torchrun, it trains as one process would on the same global batch; launched as a
Slurm job's tasks, each finds its place from what Slurm sets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.configs import ROOT, tiny_overrides
from helpers.runners import run_tiny
from helpers.stores import store_runs

from peftlab import distributed, names


def torchrun(model_dir: Path, work: Path, *overrides: str) -> subprocess.CompletedProcess:
    """train.py launched by torchrun on two processes from ``work``, 2 rows a process a step."""
    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run(
        [str(torchrun), "--nproc-per-node=2", str(ROOT / "train.py"),
         *tiny_overrides(model_dir, work), "trainer.per_device_train_batch_size=2", *overrides],
        cwd=work, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.process  # torchrun's processes
def test_torchrun_trains_one_run_equal_to_a_single_process(tiny_bloom: Path, tmp_path: Path):
    launched = torchrun(tiny_bloom, tmp_path, f"hydra.run.dir={tmp_path}/outputs/ddp")
    assert launched.returncode == 0, launched.stderr[-3000:]
    client, runs = store_runs(tmp_path)
    (run,) = runs  # logged by the first process alone
    assert run.info.status == "FINISHED"
    assert launched.stdout.count("MLflow run ") == 1

    alone = run_tiny(tiny_bloom, tmp_path / "alone", "trainer.per_device_train_batch_size=4")
    assert run.data.metrics[names.EVAL_LOSS] == pytest.approx(alone.eval_loss, abs=1e-4)
    assert run.data.metrics[names.EVAL_LOSS] != pytest.approx(
        run.data.metrics[names.EVAL_LOSS_UNTUNED]
    )
    steps = client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)
    assert len(steps) == run.data.metrics[names.TRAIN_STEPS] == 8  # 16 rows, 2 epochs, 2 x 2 a step
    assert (tmp_path / "outputs" / "ddp" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.process  # torchrun's processes
def test_torchrun_without_a_run_folder_writes_the_run_into_the_first_processes(
    tiny_bloom: Path, tmp_path: Path
):
    """Each process names its own folder (Hydra's default has the time to the microsecond):
    the run's files go to the first's, the others' hold Hydra's config and their log only."""
    launched = torchrun(tiny_bloom, tmp_path, "trainer.num_train_epochs=1")
    assert launched.returncode == 0, launched.stderr[-3000:]
    _, (run,) = store_runs(tmp_path)
    assert run.info.status == "FINISHED"
    folders = set((tmp_path / "outputs").glob("*/*"))
    first = Path(run.data.tags[names.RUN_DIR_TAG])
    assert len(folders) == 2 and first in folders, folders
    (other,) = folders - {first}
    assert (first / "adapter" / "adapter_model.safetensors").is_file()
    assert (first / names.METRICS_FILE).is_file()
    assert {path.name for path in other.iterdir()} == {".hydra", "train.log"}


TORCH_VARIABLES = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
)  # fmt: skip


def slurm_task(monkeypatch, tasks: int, task: int) -> None:
    """The environment of one task of a Slurm job launched by submitit (on two nodes when it
    has four tasks), torch.distributed's variables not yet set."""
    for name in TORCH_VARIABLES:  # set, then removed: monkeypatch puts back what was there
        monkeypatch.setenv(name, "")  # before, nothing, whatever join_slurm_job sets
        monkeypatch.delenv(name)
    nodes = 2 if tasks == 4 else 1
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", str(tasks))
    monkeypatch.setenv("SLURM_PROCID", str(task))
    monkeypatch.setenv("SLURM_LOCALID", str(task % (tasks // nodes)))
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", str(nodes))
    monkeypatch.setenv("SLURM_NODEID", str(task // (tasks // nodes)))
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[07-08]" if nodes == 2 else "node07")


@pytest.mark.parametrize(("tasks", "task", "local"), [(2, 0, 0), (2, 1, 1), (4, 3, 1)])
def test_a_slurm_jobs_task_takes_its_rank_and_the_first_node_as_master(
    monkeypatch, tasks: int, task: int, local: int
):
    slurm_task(monkeypatch, tasks, task)
    distributed.join_slurm_job()
    found = {name: os.environ[name] for name in TORCH_VARIABLES if name != "MASTER_PORT"}
    assert found == {
        "RANK": str(task), "WORLD_SIZE": str(tasks), "LOCAL_RANK": str(local),
        "LOCAL_WORLD_SIZE": str(tasks // (2 if tasks == 4 else 1)), "MASTER_ADDR": "node07",
    }  # fmt: skip
    assert 20000 <= int(os.environ["MASTER_PORT"]) <= 60000  # the same in every task: the job's
    assert (distributed.world_size(), distributed.is_first()) == (tasks, task == 0)


def test_a_job_of_one_task_or_under_torchrun_is_left_as_it_is(monkeypatch):
    slurm_task(monkeypatch, 1, 0)
    distributed.join_slurm_job()
    assert [name for name in TORCH_VARIABLES if name in os.environ] == []
    slurm_task(monkeypatch, 2, 1)
    torchrun = {"RANK": "0", "WORLD_SIZE": "4", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    for name, value in torchrun.items():
        monkeypatch.setenv(name, value)
    distributed.join_slurm_job()
    assert {name: os.environ.get(name) for name in TORCH_VARIABLES} == {
        **torchrun, "LOCAL_RANK": None, "LOCAL_WORLD_SIZE": None,
    }  # fmt: skip
