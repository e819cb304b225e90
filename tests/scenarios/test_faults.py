"""Faults: signals sent to train.py processes, stores and folders that cannot be used, rows
that do not parse; and what the run ends as. The process is the point where a signal is sent."""

import json
import re
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import psutil
import pytest
from helpers.cluster import free_port
from helpers.datasets import rows_csv
from helpers.measures import real_tokens_per_epoch
from helpers.runners import (
    LONG,
    TRAIN_PY,
    peftlab,
    peftlab_process,
    train_args,
    train_in_process,
    wait_until_training,
)
from helpers.servers import mlflow_server
from helpers.stores import new_store, store_runs, sweep_parts

from peftlab import names, training


def train_here(work: Path, *overrides: str, **kind) -> subprocess.CompletedProcess:
    """train.py on :func:`train_args` in this process (runners.train_in_process)."""
    return train_in_process(*train_args(work, *overrides, **kind), cwd=work)


def wait_until_sigint_is_default(process: subprocess.Popen) -> None:
    """Until the process no longer catches SIGINT (its handler put the default back): read from
    the kernel's record of the process (/proc/PID/status, SigCgt), not guessed with a sleep."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = Path(f"/proc/{process.pid}/status").read_text()
        caught = int(
            next(line for line in status.splitlines() if line.startswith("SigCgt:"))[7:], 16
        )
        if not caught & (1 << (signal.SIGINT - 1)):
            return
        time.sleep(0.01)
    raise TimeoutError("the process still catches SIGINT after 60 s")


@pytest.fixture
def bare_work(tiny_bloom: Path, tmp_path: Path) -> Path:
    """A folder to run in, the tiny model beside it, no store yet."""
    (tmp_path / "model").symlink_to(tiny_bloom)
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


@pytest.fixture
def work(bare_work: Path) -> Path:
    """The same with an empty store (see stores.new_store)."""
    new_store(bare_work)
    return bare_work


@pytest.mark.process
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_training_ends_the_run_killed_in_one_line(
    work: Path, start_train, sig, code
):
    process = start_train(work, LONG)
    run_id = wait_until_training(work, process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        f"interrupted by {sig.name} while training: MLflow run {run_id} ended KILLED; last "
        f"checkpoint {work}/outputs/run/trainer/checkpoint-[0-9]+; `peftlab resume {run_id}` "
        "continues it",
        line,
    ), line
    assert "Traceback" not in stderr
    (run,) = store_runs(work)[1]
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == f"interrupted by {sig.name}"


@pytest.mark.process
def test_a_second_ctrl_c_ends_the_process_at_once(work: Path, start_train):
    process = start_train(work, LONG)
    wait_until_training(work, process)
    process.send_signal(signal.SIGINT)
    wait_until_sigint_is_default(process)  # the first one is handled: the run winds down
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGINT  # ended by the signal, not by the cleanup


@pytest.mark.process
def test_an_interrupted_sweep_ends_killed_with_its_running_job(work: Path, start_train):
    process = start_train(work, LONG, "peft.num_virtual_tokens=2,4", multirun=True)
    wait_until_training(work, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    _, parent, children = sweep_parts(work)
    assert parent.info.status == "KILLED"
    assert [child.info.status for child in children] == ["KILLED"]  # the second never started


# train.py, its store lock watched: each process, at its first use of the store, waits until
# the other has come that far too (so both go for the lock at the same moment), then records
# when it held the lock.
AT_ONCE = """
import contextlib, os, runpy, sys, time
from pathlib import Path
from peftlab import tracking

here, locked, first = Path(sys.argv[1]), tracking.store_lock, [True]


@contextlib.contextmanager
def store_lock(uri):
    if first.pop() if first else False:
        (here / f"arrived-{os.getpid()}").touch()
        deadline = time.monotonic() + 120
        while len(list(here.glob("arrived-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
    with locked(uri):
        start = time.time_ns()
        yield
        with (here / f"held-{os.getpid()}").open("a") as file:
            file.write(f"{start} {time.time_ns()}\\n")


tracking.store_lock = store_lock
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.process
def test_processes_started_at_once_on_a_fresh_store_all_finish(bare_work: Path):
    """Each creates the SQLite store or waits for it: a file lock around schema creation."""
    work, watch = bare_work, bare_work.parent / "lock"
    watch.mkdir()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                AT_ONCE,
                str(watch),
                str(TRAIN_PY),
                *train_args(work, name=f"run{i}"),
            ],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    runs = store_runs(work)[1]
    assert [run.info.status for run in runs] == ["FINISHED"] * 2
    assert len(list(watch.glob("arrived-*"))) == 2
    held = sorted(
        tuple(map(int, line.split()))
        for file in watch.glob("held-*")
        for line in file.read_text().splitlines()
    )
    assert len({file.name for file in watch.glob("held-*")}) == 2
    # One at a time: each took the lock after the one before had let it go.
    assert all(end <= start for (_, end), (start, _) in pairwise(held)), held


@pytest.mark.parametrize("multirun", [False, True])
def test_a_store_that_cannot_be_used_fails_in_one_line_before_any_model_loads(
    bare_work: Path, multirun: bool
):
    """A run and a sweep (how quickly: test_tracking.py)."""
    work = bare_work
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = train_here(work, f"tracking.uri={uri}", multirun=multirun)
    stdout, stderr = result.stdout, result.stderr
    assert result.returncode == 1
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: tracking.uri='{uri}': no MLflow server answers there")
    )
    assert "Traceback" not in stderr
    assert "Data:" not in stdout + stderr  # no model or data loaded (Hydra logs to stdout)
    assert not (work / "mlruns").exists()


def test_a_row_that_does_not_parse_fails_the_run_naming_its_line(work: Path):
    data = rows_csv(work / "rows.csv", bad_line=True)
    result = train_here(work, f"dataset.data_files={data}", "dataset.text_column=text")
    stderr = result.stderr
    assert result.returncode == 1
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: dataset.data_files='{data}' line 6: 3 fields where the header has fewer"
        )
    )


@pytest.mark.parametrize("multirun", [False, True])
def test_an_output_folder_that_cannot_be_written_is_one_line(work: Path, multirun: bool):
    (work / "a-file").write_text("")
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    result = train_here(work, f"{key}={work}/a-file/out", multirun=multirun)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {key}='{work}/a-file/out': cannot create or write this output folder "
        f"(Not a directory); pass a writable one, e.g. {key}=outputs/run"
    )


STEPS = 80  # 20 epochs of 4 batches of 4 rows
EPOCHS = f"trainer.num_train_epochs={STEPS // 4}"


@pytest.fixture(scope="module")
def uninterrupted(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory):
    """The run the interrupted ones must end as: the same config, never stopped."""
    reference = tmp_path_factory.mktemp("uninterrupted")
    (reference / "model").symlink_to(tiny_bloom)
    (reference / "work").mkdir()
    new_store(reference / "work")
    result = train_here(reference / "work", EPOCHS)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = store_runs(reference / "work")[1]
    return run


def assert_ends_as_uninterrupted(
    work: Path, run_id: str, expected, redone_after: int | None = None
) -> None:
    """The same run FINISHED, every step logged once, the held-out loss of a run never stopped.
    Steps after ``redone_after`` (the checkpoint a killed process resumed from) were trained
    again: they may be logged twice, with the same loss (the same training, redone)."""
    client, runs = store_runs(work)
    assert [r.info.run_id for r in runs if names.TRAIN_LOSS in r.data.metrics] == [
        run_id
    ]  # no other
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    losses: dict[int, list[float]] = {}
    for point in client.get_metric_history(run_id, names.TRAIN_LOSS):
        losses.setdefault(point.step, []).append(point.value)
    assert sorted(losses) == list(range(1, STEPS + 1))  # none lost
    for step, values in losses.items():
        redone = redone_after is not None and step > redone_after
        assert len(values) == 1 or (redone and values == pytest.approx([values[0]] * 2)), step
    assert run.data.metrics[names.EVAL_LOSS] == pytest.approx(
        expected.data.metrics[names.EVAL_LOSS], abs=1e-4
    )


def stop_past_a_checkpoint(work: Path, process: subprocess.Popen) -> Path:
    """Freeze the process (SIGSTOP) once it has logged steps after its last complete checkpoint,
    and return that checkpoint: steps that a resume trains again."""
    trainer = work / "outputs" / "run" / "trainer"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        logged = max((int(m.step) for m in logged_losses(work)), default=0)  # only grows
        process.send_signal(signal.SIGSTOP)
        checkpoint = training.last_checkpoint(trainer)
        if checkpoint is not None and logged > training.checkpoint_step(checkpoint):
            return checkpoint
        process.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise TimeoutError(f"no step logged past a checkpoint in {trainer} within 180 s")


def logged_losses(work: Path) -> list:
    if not (work / "mlruns" / "mlflow.db").is_file():
        return []
    client, runs = store_runs(work)
    return [m for run in runs for m in client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)]


@pytest.mark.process
def test_a_resumed_run_continues_as_the_same_run_and_ends_as_if_uninterrupted(
    work: Path, start_train, uninterrupted
):
    process = start_train(work, EPOCHS)
    run_id = wait_until_training(work, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143
    checkpoint_step = int(re.search(r"checkpoint-([0-9]+)", stderr)[1])
    result = peftlab_process("resume", run_id, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]

    assert_ends_as_uninterrupted(work, run_id, uninterrupted)
    # Throughput of the resumed part: its own epochs' real tokens over its own runtime.
    metrics = store_runs(work)[0].get_run(run_id).data.metrics
    resumed_epochs = (STEPS - checkpoint_step) / 4
    tokens = real_tokens_per_epoch(work.parent / "model") * resumed_epochs
    assert metrics[names.TRAIN_TOKENS_PER_SECOND] * metrics[names.TRAIN_RUNTIME] == pytest.approx(
        tokens
    )


@pytest.mark.process
def test_a_killed_process_leaves_its_run_running_with_its_last_epoch_checkpoint(
    work: Path, start_train, uninterrupted
):
    """SIGKILL (a node lost): no handler runs; the checkpoint of the last epoch is what is kept,
    and `peftlab resume` continues the run from it to the uninterrupted result."""
    process = start_train(work, EPOCHS)
    checkpoint = stop_past_a_checkpoint(work, process)
    process.kill()
    process.communicate(timeout=60)
    (run,) = store_runs(work)[1]
    assert run.info.status == "RUNNING"
    assert training.last_checkpoint(checkpoint.parent) == checkpoint  # what resume takes
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] % 4 == 0 and state["epoch"] == state["global_step"] / 4
    logged_before = len(logged_losses(work))
    assert logged_before > state["global_step"]  # steps past the checkpoint, to be redone
    assert peftlab("resume", run.info.run_id, cwd=work).returncode == 0  # its train.py's output
    assert_ends_as_uninterrupted(work, run.info.run_id, uninterrupted, state["global_step"])
    assert len(logged_losses(work)) == STEPS + logged_before - state["global_step"]


@pytest.mark.process
def test_a_submitit_job_run_again_in_its_folder_resumes_its_unfinished_run(
    work: Path, start_train, uninterrupted
):
    """What a requeued Slurm job does: the job's own command (``python -m
    submitit.core._submit FOLDER``) once more, with its environment, in its folder. submitit_local
    runs each job in a process of its own, under a controller, as Slurm does."""
    sweep = (EPOCHS, "hydra/launcher=submitit_local",
             f"hydra.sweep.dir={work}/multirun/requeued")  # fmt: skip
    process = start_train(work, *sweep, multirun=True)
    run_id = wait_until_training(work, process)
    started = psutil.Process(process.pid).children(recursive=True)
    (job,) = [child for child in started if "submitit.core._submit" in child.cmdline()]
    command, environment, folder = job.cmdline(), job.environ(), job.cwd()
    job.send_signal(signal.SIGTERM)  # preempted
    job.wait(timeout=120)
    # Slurm keeps no launcher waiting for a requeued job: the sweep's process goes too.
    process.kill()
    process.communicate()
    psutil.wait_procs(started, timeout=30)
    again = subprocess.run(command, env=environment, cwd=folder, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    log = (work / "multirun" / "requeued" / "0" / "train.log").read_text()
    assert f"Found unfinished run {run_id} (KILLED)" in log
    assert_ends_as_uninterrupted(work, run_id, uninterrupted)


@pytest.mark.process
def test_a_tracking_server_gone_mid_run_costs_no_training(work: Path, start_train):
    with mlflow_server(work) as base:
        process = start_train(
            work,
            f"tracking.uri={base}",
            "trainer.num_train_epochs=10",
            "trainer.learning_rate=0.03",
        )
        wait_until_training(work, process)
        process.send_signal(signal.SIGSTOP)  # frozen mid-training while the server stops
        assert len(logged_losses(work)) < 40
    process.send_signal(signal.SIGCONT)
    # The server is stopped: training goes on, then logging its results fails, in one line.
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 1, stderr[-3000:]
    assert "MLflow store unreachable, training goes on" in stdout + stderr
    run_dir = work / "outputs" / "run"
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: could not log the results to {base} ("), line
    assert line.endswith(f"the adapter, config, metrics and samples are in {run_dir}")
    assert "Traceback" not in stderr
    for kept in ("adapter/adapter_model.safetensors", ".hydra/config.yaml", names.SAMPLES_FILE):
        assert (run_dir / kept).is_file(), kept
    metrics = json.loads((run_dir / names.METRICS_FILE).read_text())
    assert metrics[names.TRAIN_STEPS] == 40  # 10 epochs of 4 steps: all trained
    assert metrics[names.EVAL_LOSS] < metrics[names.EVAL_LOSS_UNTUNED]
    # The curves the server missed: every logging step's loss, in the last checkpoint.
    (checkpoint,) = (run_dir / "trainer").glob("checkpoint-*")
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == list(range(1, 41))
