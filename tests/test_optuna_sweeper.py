"""peftlab's Optuna sweeper, run as a user runs it: pruning, failures, one study shared by
several workers (a journal file, a real PostgreSQL), a search continued, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, free_port, peftlab, run_sweep, store_runs, sweep_parts, tiny_overrides
from services import postgres_cluster

from peftlab import study as studies

# Two learning rates far apart: the low one barely moves the held-out loss, so once a trial of
# the high one has completed, the pruner stops the low one at its first evaluation.
LEARNING_RATES = "trainer.learning_rate=0.00001,0.05"
SEARCH = [
    "hparams_search=optuna",
    "hydra.sweeper.params=null",  # the search space: the learning rates below only
    LEARNING_RATES,
    "hydra.sweeper.sampler=random",
    "trainer.eval_strategy=epoch",
    "trainer.num_train_epochs=3",
]


def journal_study(work: Path, name: str = "peftlab") -> optuna.Study:
    (journal,) = (work / "multirun").glob(f"*/*/{studies.JOURNAL_FILE}")
    return optuna.load_study(study_name=name, storage=studies.open_storage(f"journal:{journal}"))


@pytest.fixture(scope="module")
def pruned_search(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 trials, 2 at a time in joblib's worker processes, with the percentile pruner."""
    work = tmp_path_factory.mktemp("pruned-search")
    result = run_sweep(
        tiny_bloom,
        work,
        *SEARCH,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.pruner=percentile",
        "+hydra.sweeper.pruner_settings.percentile=50",
        "+hydra.sweeper.pruner_settings.n_startup_trials=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def test_a_pruned_trial_stops_training_at_that_evaluation(pruned_search: Path):
    study = journal_study(pruned_search)
    states = [t.state for t in study.trials]
    assert len(states) == 4 and optuna.trial.TrialState.PRUNED in states, states
    _, parent, children = sweep_parts(pruned_search)
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    full_steps = 3 * 4  # 3 epochs of 16 rows in batches of 4
    by_trial = {int(c.data.tags["job_num"]): c for c in children}
    for trial in study.trials:
        run = by_trial[trial.number]
        # Every evaluation during training reached the trial, from joblib's worker processes.
        assert trial.intermediate_values, trial.number
        if trial.state == optuna.trial.TrialState.PRUNED:
            step = int(run.data.tags["pruned"])
            assert max(trial.intermediate_values) == step < full_steps
            assert run.data.metrics["train_steps"] == step
            assert run.data.metrics["eval_loss"] == pytest.approx(trial.intermediate_values[step])
        else:
            assert "pruned" not in run.data.tags
            assert run.data.metrics["train_steps"] == full_steps
            assert trial.value == pytest.approx(run.data.metrics["eval_loss"])
    # The parent's best is a trial that trained to its end, whatever a pruned one reached.
    best = next(c for c in children if c.info.run_id == parent.data.tags["best_run_id"])
    assert "pruned" not in best.data.tags
    assert parent.data.metrics["best_eval_loss"] == pytest.approx(study.best_value)
    assert parent.data.tags["pruned_jobs"] == str(states.count(optuna.trial.TrialState.PRUNED))


def test_compare_marks_pruned_runs_and_ranks_them_after_completed_ones(pruned_search: Path):
    result = peftlab("compare", "--out", str(pruned_search / "compare"), cwd=pruned_search)
    assert result.returncode == 0, result.stderr[-2000:]
    table = (pruned_search / "compare" / "comparison.csv").read_text().splitlines()
    header = table[0].split(",")
    pruned = [row.split(",")[header.index("pruned")] for row in table[1:]]
    assert "" in pruned and any(p for p in pruned)
    first_pruned = next(i for i, p in enumerate(pruned) if p)
    assert all(pruned[first_pruned:]), pruned  # no completed run ranks below a pruned one
