"""Runs and sweeps made once a session and shared by the tests that read them (fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers.matrices import CORE_METHODS, METHODS, PATH_METHODS
from helpers.runners import run_sweep, run_tiny

# Two learning rates far apart: the low one barely moves the held-out loss, so once a trial of
# the high one has completed, the pruner stops the low one at its first evaluation.
LEARNING_RATES = "trainer.learning_rate=0.00001,0.05"
SEARCH = [
    "hparams_search=optuna",
    "hydra.sweeper.custom_search_space=null",  # the search space: the learning rates below only
    LEARNING_RATES,
    "hydra.sweeper.sampler=random",
    "trainer.eval_strategy=epoch",
    "trainer.num_train_epochs=3",
]


@pytest.fixture(scope="session")
def sweep_run(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 2x2 Cartesian sweep of a tiny BLOOM: virtual tokens x epochs."""
    work = tmp_path_factory.mktemp("sweep")
    result = run_sweep(
        tiny_bloom,
        work,
        "peft.prompt_tuning_init=RANDOM",
        "peft.num_virtual_tokens=2,4",
        "trainer.num_train_epochs=1,2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return work


@pytest.fixture(scope="session")
def method_sweep(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory):
    """One sweep over a method of each kind, each at its defaults, on the role-play task
    (act -> prompt): held-out generations scored."""
    work = tmp_path_factory.mktemp("method-sweep")
    task = ["dataset=prompts-task", "dataset.max_length=160"]  # the tiny tokenizer's long rows
    result = run_sweep(tiny_llama, work, f"peft={','.join(CORE_METHODS)}", *task)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


@pytest.fixture(scope="session")
def runs_of_each_kind(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory):
    """A run of each kind of PEFT method, and of those that attach in their own way
    (PATH_METHODS), on one tiny Llama, in one store."""
    work = tmp_path_factory.mktemp("methods")
    results = [
        run_tiny(tiny_llama, work, f"peft={option}", *METHODS[option], name=option)
        for option in PATH_METHODS
    ]
    return MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db"), results


@pytest.fixture(scope="session")
def pruned_search(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 trials, 2 at a time in joblib's worker processes, with the percentile pruner."""
    return searched(
        tiny_bloom,
        tmp_path_factory.mktemp("pruned-search"),
        *SEARCH,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.pruner=percentile",
        "+hydra.sweeper.pruner_settings.percentile=50",
        "+hydra.sweeper.pruner_settings.n_startup_trials=1",
    )


# 4 trials of 12 steps (3 epochs of 16 rows in batches of 4), reporting at the preset's every
# 5 steps; asha's first rung is the first report: a low learning rate after a high one stops
# there.
ASHA_SEARCH_STEPS = 12


@pytest.fixture(scope="session")
def asha_search(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 trials, one after another, with the asha pruner at its defaults."""
    return searched(
        tiny_bloom,
        tmp_path_factory.mktemp("asha-search"),
        *SEARCH[:4],
        "trainer.num_train_epochs=3",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.pruner=asha",
    )


def searched(model_dir: Path, work: Path, *overrides: str) -> Path:
    """``work`` after a search of ``overrides`` that ended well."""
    result = run_sweep(model_dir, work, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return work
