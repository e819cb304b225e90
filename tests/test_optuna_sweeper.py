"""peftlab's Optuna sweeper, run as a user runs it: pruning, failures, one study shared by
several workers (a journal file, a real PostgreSQL), a search continued, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers.cluster import free_port
from helpers.configs import ROOT, tiny_overrides
from helpers.runners import LONG, peftlab, run_sweep, wait_until_training
from helpers.session_runs import ASHA_SEARCH_STEPS, SEARCH
from helpers.stores import new_store, store_runs, sweep_parts
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from hydra_plugins.peftlab_optuna_sweeper.optuna_sweeper import OptunaSweeper
from peftlab import compare, names
from peftlab import study as studies


def journal_study(work: Path, name: str = "peftlab") -> optuna.Study:
    (journal,) = (work / "multirun").glob(f"*/*/{studies.JOURNAL_FILE}")
    return optuna.load_study(study_name=name, storage=studies.open_storage(f"journal:{journal}"))


def test_a_pruned_trial_stops_training_at_that_evaluation(pruned_search: Path):
    study = journal_study(pruned_search)
    states = [t.state for t in study.trials]
    assert len(states) == 4 and optuna.trial.TrialState.PRUNED in states, states
    _, parent, children = sweep_parts(pruned_search)
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    full_steps = 3 * 4  # 3 epochs of 16 rows in batches of 4
    by_trial = {int(c.data.tags[names.JOB_NUM_TAG]): c for c in children}
    for trial in study.trials:
        run = by_trial[trial.number]
        # Every evaluation during training reached the trial, from joblib's worker processes.
        assert trial.intermediate_values, trial.number
        if trial.state == optuna.trial.TrialState.PRUNED:
            step = int(run.data.tags[names.PRUNED_TAG])
            assert max(trial.intermediate_values) == step < full_steps
            assert run.data.metrics[names.TRAIN_STEPS] == step
            assert run.data.metrics[names.EVAL_LOSS] == pytest.approx(
                trial.intermediate_values[step]
            )
        else:
            assert names.PRUNED_TAG not in run.data.tags
            assert run.data.metrics[names.TRAIN_STEPS] == full_steps
            assert trial.value == pytest.approx(run.data.metrics[names.EVAL_LOSS])
    # The parent's best is a trial that trained to its end, whatever a pruned one reached.
    best = next(c for c in children if c.info.run_id == parent.data.tags[names.BEST_RUN_ID_TAG])
    assert names.PRUNED_TAG not in best.data.tags
    assert parent.data.metrics[names.BEST_EVAL_LOSS] == pytest.approx(study.best_value)
    assert parent.data.tags[names.PRUNED_JOBS_TAG] == str(
        states.count(optuna.trial.TrialState.PRUNED)
    )


def test_compare_marks_pruned_runs_and_ranks_them_after_completed_ones(pruned_search: Path):
    result = peftlab("compare", "--out", str(pruned_search / "compare"), cwd=pruned_search)
    assert result.returncode == 0, result.stderr[-2000:]
    table = (pruned_search / "compare" / "comparison.csv").read_text().splitlines()
    header = table[0].split(",")
    pruned = [row.split(",")[header.index(names.PRUNED_TAG)] for row in table[1:]]
    assert "" in pruned and any(p for p in pruned)
    first_pruned = next(i for i, p in enumerate(pruned) if p)
    assert all(pruned[first_pruned:]), pruned  # no completed run ranks below a pruned one


def test_asha_stops_trials_at_a_rung_and_the_parent_sums_the_steps_spent(asha_search: Path):
    study = journal_study(asha_search)
    _, parent, children = sweep_parts(asha_search)
    by_trial = {int(c.data.tags[names.JOB_NUM_TAG]): c for c in children}
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and len(study.trials) == 4, [t.state for t in study.trials]
    for trial in study.trials:
        run = by_trial[trial.number].data
        steps = run.metrics[names.SEARCH_STEPS]
        assert steps == run.metrics[names.TRAIN_STEPS] and run.metrics[names.SEARCH_TOKENS] > 0
        if trial in pruned:  # at the first rung: the first report, 5 steps (the preset's)
            assert sorted(trial.intermediate_values) == [5] and steps == 5
            assert int(run.tags[names.PRUNED_TAG]) == 5
        else:
            # Every 5 steps, and at the last one.
            assert sorted(trial.intermediate_values) == [5, 10, 12] == [5, 10, steps]
    for name in (names.SEARCH_STEPS, names.SEARCH_TOKENS):
        spent = sum(c.data.metrics[name] for c in children)
        assert parent.data.metrics[name] == spent
    assert parent.data.metrics[names.SEARCH_STEPS] < 4 * ASHA_SEARCH_STEPS  # the saving


def test_compare_shows_the_steps_each_trial_of_a_search_spent(asha_search: Path):
    out = asha_search / "compare"
    trade_off = f"{names.EVAL_LOSS},{names.SEARCH_STEPS}"  # the console's, beside the CSV's
    result = peftlab("compare", "--pareto", trade_off, "--out", str(out), cwd=asha_search)
    assert result.returncode == 0, result.stderr[-2000:]
    table = (out / "comparison.csv").read_text().splitlines()
    header = table[0].split(",")
    rows = [dict(zip(header, row.split(","), strict=True)) for row in table[1:]]
    spent = sorted((r[names.PRUNED_TAG], int(r[names.SEARCH_STEPS])) for r in rows)
    assert {steps for pruned, steps in spent if pruned} == {5}
    assert {steps for pruned, steps in spent if not pruned} == {ASHA_SEARCH_STEPS}
    assert not any(r[compare.PARETO] == "True" for r in rows if r[names.PRUNED_TAG])
    shown = (out / "comparison.md").read_text().splitlines()[0]
    assert names.SEARCH_STEPS in shown and names.SEARCH_STEPS in result.stdout


def test_a_failed_trial_is_told_fail_and_the_search_goes_on(tiny_bloom: Path, tmp_path: Path):
    result = run_sweep(
        tiny_bloom,
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.custom_search_space=null",
        "dataset.text_column=prompt,nope",
        "hydra.sweeper.sampler=grid",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = journal_study(tmp_path)
    by_column = {t.params["dataset.text_column"]: t for t in study.trials}
    assert by_column["prompt"].state == optuna.trial.TrialState.COMPLETE
    assert by_column["nope"].state == optuna.trial.TrialState.FAIL
    assert "'nope' is not a column" in by_column["nope"].user_attrs["error"]
    _, parent, children = sweep_parts(tmp_path)
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]
    assert parent.info.status == "FINISHED"


def test_a_worker_with_the_budget_taken_waits_and_retries_a_dead_workers_trial(
    tmp_path: Path, monkeypatch
):
    """Its own trials told, another worker's still running: it waits; that worker dies, and
    this one fails the trial, ends its run KILLED and runs it again."""
    monkeypatch.setattr(studies, "POLL_S", 0.05)
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    new_store(tmp_path)
    client = MlflowClient(uri)
    dead_run = client.create_run(client.create_experiment("search")).info.run_id
    space = {"x": optuna.distributions.CategoricalDistribution([1, 2])}
    study = optuna.create_study(
        study_name="s", storage=studies.open_storage(f"journal:{tmp_path}/s.journal")
    )
    other = study.ask(space)  # its worker beats no more
    other.set_user_attr(studies.WORKER_ATTR, "node-3:4242")
    other.set_user_attr(studies.RUN_ATTR, dead_run)
    sweeper = OptunaSweeper(n_jobs=1)
    sweeper.config = OmegaConf.create({"tracking": {"uri": uri}})
    ran = []  # each batch launched: told at once, as a job that ended well
    monkeypatch.setattr(sweeper, "_run", lambda study, batch, fixed, beat: [
        ran.append(t.number) or study.tell(t, 1.0) for t in batch])  # fmt: skip
    sweeper._trials(study, space, [], None, n_trials=2, heartbeat_s=0.2)
    trials = study.get_trials()
    assert sum(studies.counts_toward_budget(t) for t in trials) == 2
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == other.number]
    assert retry.number in ran and retry.params == other.params
    run = client.get_run(dead_run)
    assert run.info.status == "KILLED"
    assert run.data.tags[names.WORKER_DIED_TAG] == "node-3:4242"


def start_worker(model_dir: Path, work: Path, *overrides: str) -> subprocess.Popen:
    """One worker of a search: ``train.py -m`` with its own sweep folder, into ``work``'s store."""
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            *tiny_overrides(model_dir, work),
            *overrides,
        ],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_workers(count: int, model_dir: Path, work: Path, *overrides: str) -> list[str]:
    """``count`` workers started at once; returns what each printed, once all have ended."""
    workers = [start_worker(model_dir, work, *overrides) for _ in range(count)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    return outputs


@pytest.mark.process
@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_workers_started_at_once_run_one_study(backend, tiny_bloom, tmp_path, request):
    if backend == "journal":
        storage, shown = f"journal:{tmp_path}/shared/study.journal", None
    else:
        server = request.getfixturevalue(backend)
        storage = server.create_database(f"study_{tmp_path.name[-12:].lower()}")
        shown = storage.replace(server.password, "***")
    outputs = run_workers(
        2,
        tiny_bloom,
        tmp_path,
        *SEARCH[:4],
        "trainer.num_train_epochs=1",
        "hydra.sweeper.n_trials=4",
        f"hydra.sweeper.storage='{storage}'",
    )
    study = optuna.load_study(study_name="peftlab", storage=studies.open_storage(storage))
    numbers = sorted(t.number for t in study.trials if studies.counts_toward_budget(t))
    assert numbers == [0, 1, 2, 3]  # the budget is the study's, each trial run once
    _, runs = store_runs(tmp_path)
    (parent,) = [r for r in runs if r.data.tags.get(names.SWEEP_TAG) == "true"]
    children = [r for r in runs if r.data.tags.get(names.PARENT_TAG) == parent.info.run_id]
    assert len(children) == len(runs) - 1 == 4
    assert sorted(int(c.data.tags[names.JOB_NUM_TAG]) for c in children) == numbers
    assert study.user_attrs[studies.PARENT_ATTR] == parent.info.run_id
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics[names.BEST_EVAL_LOSS] == pytest.approx(study.best_value)
    if shown is not None:  # the storage's password is in no run and no printed line
        assert parent.data.tags[names.STORAGE_TAG] == shown
        written = json.dumps([[r.data.params, r.data.tags] for r in runs]) + "".join(outputs)
        assert server.password not in written
        for run in runs:
            for artifact in (
                Path(run.info.artifact_uri.removeprefix("file://")) / names.CONFIG_DIR
            ).glob("*"):
                assert server.password not in artifact.read_text(), artifact


def test_a_search_started_again_continues_and_retries_abandoned_trials(tiny_bloom, tmp_path):
    storage = f"journal:{tmp_path}/study.journal"
    search = [*SEARCH[:4], "trainer.num_train_epochs=1", f"hydra.sweeper.storage={storage}"]
    assert run_sweep(tiny_bloom, tmp_path, *search, "hydra.sweeper.n_trials=2").returncode == 0
    # A worker killed mid-trial leaves it RUNNING, its heartbeat stopped.
    study = optuna.load_study(study_name="peftlab", storage=studies.open_storage(storage))
    abandoned = study.ask(
        {"trainer.learning_rate": optuna.distributions.CategoricalDistribution([0.00001, 0.05])}
    )
    time.sleep(1.5)  # three heartbeats of 0.5 s
    result = run_sweep(
        tiny_bloom, tmp_path, *search, "hydra.sweeper.n_trials=3", "hydra.sweeper.heartbeat_s=0.5"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name="peftlab", storage=studies.open_storage(storage)).trials
    left = trials[abandoned.number]
    assert left.state == optuna.trial.TrialState.FAIL and not studies.counts_toward_budget(left)
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == abandoned.number]
    assert retry.params == abandoned.params and retry.state == optuna.trial.TrialState.COMPLETE
    assert sum(studies.counts_toward_budget(t) for t in trials) == 3
    _, runs = store_runs(tmp_path)
    (parent,) = [r for r in runs if r.data.tags.get(names.SWEEP_TAG) == "true"]  # the same one
    assert len(runs) == 1 + 3 and parent.info.status == "FINISHED"


def maximising_study(work: Path) -> str:
    storage = f"journal:{work}/max.journal"
    optuna.create_study(
        study_name="peftlab", storage=studies.open_storage(storage), direction="maximize"
    )
    return storage


# One case for each place a search's settings are checked: the sampler's and pruner's names,
# the storage, the study. Every refusal is tested in process in test_study.py; these run
# train.py -m to show the one line, the exit and no run left behind.
BAD_SEARCHES = {
    "unknown sampler": (
        lambda work: ["hydra.sweeper.sampler=annealing"],
        "hydra.sweeper.sampler='annealing' is not allowed: one of tpe, random, gp, grid",
    ),
    "unreachable storage": (
        lambda work: [f"hydra.sweeper.storage=postgresql://u:pw@127.0.0.1:{free_port()}/db"],
        "hydra.sweeper.storage='postgresql://u:***@127.0.0.1:",
    ),
    "unknown pruner": (
        lambda work: ["hydra.sweeper.pruner=sha"],
        "hydra.sweeper.pruner='sha' is not allowed: one of median, percentile, asha, hyperband",
    ),
    "unknown pruner setting": (
        lambda work: ["hydra.sweeper.pruner=asha", "+hydra.sweeper.pruner_settings.rungs=3"],
        "hydra.sweeper.pruner_settings: ",
    ),
    "eval_steps past a trial's steps": (  # 2 epochs of 16 rows in batches of 4
        lambda work: ["hydra.sweeper.pruner=asha", "trainer.eval_steps=9"],
        "trainer.eval_steps=9 is more than the 8 optimizer steps a trial trains",
    ),
    "pruner with no reports": (
        lambda work: ["hydra.sweeper.pruner=hyperband", "trainer.eval_strategy=no"],
        "hydra.sweeper.pruner='hyperband' needs held-out evaluations during training",
    ),
    "data-parallel trials": (
        lambda work: ["hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2"],
        "hydra.launcher.tasks_per_node=2 is not allowed: 1 in a search",
    ),
    "study with another direction": (
        lambda work: [f"hydra.sweeper.storage={maximising_study(work)}"],
        "study 'peftlab' in journal:",
    ),
}


@pytest.mark.parametrize("case", BAD_SEARCHES)
def test_bad_search_settings_are_one_line_before_any_run(case, tiny_bloom, tmp_path):
    overrides, expected = BAD_SEARCHES[case]
    started = time.monotonic()
    result = run_sweep(tiny_bloom, tmp_path, "hparams_search=optuna", *overrides(tmp_path))
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and ":pw@" not in result.stdout + result.stderr
    assert elapsed < 30  # the imports, and a refused connection: no model, no retries
    if (tmp_path / "mlruns").exists():
        _, runs = store_runs(tmp_path)
        assert runs == []  # no parent run was started, so none is left RUNNING


@pytest.mark.process
def test_an_interrupted_search_ends_its_trial_killed_and_not_counted(
    tiny_bloom, tmp_path, start_train
):
    (tmp_path / "model").symlink_to(tiny_bloom)
    work = tmp_path / "work"
    work.mkdir()
    process = start_train(work, *SEARCH[:4], LONG, "hydra.sweeper.n_trials=3", multirun=True)
    wait_until_training(work, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    _, parent, children = sweep_parts(work)
    assert parent.info.status == "KILLED"
    assert [child.info.status for child in children] == ["KILLED"]  # checkpointed, resumable
    study = optuna.load_study(
        study_name="peftlab",
        storage=studies.open_storage(f"journal:{work}/multirun/{studies.JOURNAL_FILE}"),
    )
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs[studies.NOT_COUNTED_ATTR] == "interrupted"


@pytest.mark.process
def test_trials_run_as_submitit_jobs_report_to_the_study(tiny_bloom: Path, tmp_path: Path):
    result = run_sweep(
        tiny_bloom,
        tmp_path,
        *SEARCH[:5],
        "trainer.num_train_epochs=2",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner=median",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = journal_study(tmp_path)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(sorted(t.intermediate_values) == [4, 8] for t in study.trials)
    (sweep_dir,) = (tmp_path / "multirun").glob("*/*")
    assert len([p for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit()]) == 2


def test_the_first_workers_sampler_is_seeded_by_hydra_sweeper_seed(asha_search: Path):
    """The asha search's 4 trials (random sampler, seed 42 by default, one worker) are what a
    fresh RandomSampler(seed=42) draws from the same space, in order."""
    trials = sorted(journal_study(asha_search).trials, key=lambda t: t.number)
    reference = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=42))
    rates = [0.00001, 0.05]  # session_runs.LEARNING_RATES
    drawn = [reference.ask().suggest_categorical("trainer.learning_rate", rates) for _ in trials]
    assert [t.params["trainer.learning_rate"] for t in trials] == drawn
    assert len(set(drawn)) == 2  # both values drawn: the order tells seeds apart
