"""Runs as the tests make them: a tiny run in this process (as train.py's job would run it),
train.py and the ``peftlab`` command in this process or as processes of their own."""

from __future__ import annotations

import io
import logging
import logging.config
import os
import runpy
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers.configs import ROOT, compose_run, in_process_overrides, tiny_overrides
from helpers.servers import stop_group
from helpers.stores import new_store, store_runs
from peftlab import app, cli, names, pipeline
from peftlab.pipeline import RunResult
from peftlab.schema import to_settings
from peftlab.shared import Shared

TRAIN_PY = ROOT / "train.py"
LONG = "trainer.num_train_epochs=500"  # minutes of training: time to be interrupted


def run_tiny(
    model_dir: Path, work: Path, *overrides: str, name: str = "run", shared: Shared | None = None
) -> RunResult:
    """One run in this process, as train.py would do it, into ``work/name``: its config saved
    where Hydra saves it, its context (tags from the groups' choices) made by the product's own
    ``app.run_context``; on the base model and untuned measurements of ``shared`` (else of its
    own)."""
    new_store(work)
    cfg, hydra_cfg = compose_run(
        [*tiny_overrides(model_dir, work), *in_process_overrides(work, name), *overrides],
        run_dir=work / name,
    )
    context = app.run_context(hydra_cfg, cfg)
    context.config_dir.mkdir(parents=True)  # as Hydra writes it: the config before resolution
    OmegaConf.save(cfg, context.config_dir / names.CONFIG_FILE)
    return pipeline.run(to_settings(cfg), context, shared or Shared())


def as_a_process(main: Callable[[], int | None], args, cwd: Path) -> subprocess.CompletedProcess:
    """``main()`` run from ``cwd`` in this process, ended as a process would end: its exit code
    (a SystemExit's; for a message, printed and 1, as the interpreter does) and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(out), redirect_stderr(err):
        patch.chdir(cwd)
        try:
            code = main()
        except SystemExit as exit:
            code = exit.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
    return subprocess.CompletedProcess(args, code or 0, out.getvalue(), err.getvalue())


def peftlab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``peftlab ARGS`` in this process (``cli.main``), from ``cwd`` (its default store is
    ``cwd/mlruns``): its exit code and what it printed. Commands that launch train.py (rerun,
    resume) print that process's output straight through: use :func:`peftlab_process` there."""
    return as_a_process(lambda: cli.main(list(args)), args, cwd)


def peftlab_process(
    *args: str, cwd: Path, python: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """The ``peftlab`` command as a user runs it, in ``cwd`` (``python``: the interpreter's own
    options): each command's exit code is checked this way once, and rerun and resume always
    (they launch train.py)."""
    return subprocess.run(
        [sys.executable, *python, "-m", "peftlab.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def imported_top_level(stderr: str) -> set[str]:
    """Top-level packages imported by a process run with ``python -X importtime``."""
    lines = [line for line in stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in lines}


def run_train(*overrides: str, cwd: Path, env: dict[str, str] | None = None):
    """``python train.py`` as a user runs it, its outputs under ``cwd``."""
    return subprocess.run(
        [sys.executable, str(TRAIN_PY), *overrides, f"hydra.run.dir={cwd}/outputs/run"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def train_in_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` in this process: the script run as ``__main__`` (Hydra's own
    launch: compose, sweepers, launchers, callbacks), without a new interpreter's ~10 s of
    imports. Its exit code and what it printed; the log handlers Hydra set up go after."""

    def run_script() -> None:
        runpy.run_path(str(TRAIN_PY), run_name="__main__")

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [str(TRAIN_PY), *args])
        # Hydra sets up logging with dictConfig, which first closes every handler the process
        # has made: here pytest's and other libraries' (absl's would close pytest's capture).
        patch.setattr(logging.config, "_clearExistingHandlers", logging._handlers.clear)
        try:
            return as_a_process(run_script, args, cwd)
        finally:
            for handler in set(root.handlers) - set(handlers):
                handler.close()
            root.handlers[:], root.level = handlers, level


def run_sweep(model_dir: Path, work: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``train.py -m`` on a tiny model in this process, its store and multirun/ under ``work``
    (test_train.py and scenarios/test_faults.py run train.py, and a sweep, as processes of
    their own)."""
    new_store(work)
    return train_in_process("-m", *tiny_overrides(model_dir, work), *overrides, cwd=work)


def train_args(work: Path, *overrides: str, multirun: bool = False, name: str = "run"):
    """train.py's arguments for a tiny run (or sweep) in ``work``, the tiny model beside it."""
    return [*(["-m"] if multirun else []), *tiny_overrides(work.parent / "model", work),
            f"hydra.run.dir={work}/outputs/{name}", f"hydra.sweep.dir={work}/multirun",
            *overrides]  # fmt: skip


@pytest.fixture
def start_train() -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts ``python train.py`` on :func:`train_args`: a process to send signals to, in a
    process group of its own with what it starts (a sweep's jobs). Whatever of it is still
    running when the test ends (one that failed before waiting on it) is stopped then."""
    started: list[subprocess.Popen] = []

    def start(work: Path, *overrides: str, **kind) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, str(TRAIN_PY), *train_args(work, *overrides, **kind)],
            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        stop_group(process)


def wait_until_training(work: Path, process: subprocess.Popen) -> str:
    """The id of the run once it has logged a training step."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        if (work / "mlruns" / "mlflow.db").is_file():
            training = [r for r in store_runs(work)[1] if names.TRAIN_LOSS in r.data.metrics]
            if training:
                return training[0].info.run_id
        time.sleep(0.5)
    raise TimeoutError("the run did not start training within 180 s")
