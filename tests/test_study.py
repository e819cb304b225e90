"""The search's study: storages, the shared budget, abandoned trials, samplers and pruners."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from helpers.cluster import free_port
from helpers.configs import compose_config
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from peftlab import study as studies
from peftlab.errors import PeftlabError

SPACE = {"x": CategoricalDistribution([1, 2, 3])}


def journal(tmp_path: Path) -> optuna.Study:
    storage = studies.open_storage(f"journal:{tmp_path}/s.journal")
    return optuna.create_study(study_name="s", storage=storage)


def test_the_default_storage_is_a_journal_in_the_sweep_folder(tmp_path: Path):
    assert studies.storage_spec(None, tmp_path) == f"journal:{tmp_path}/optuna.journal"
    assert studies.storage_spec("journal:rel/s.journal", tmp_path) == (
        f"journal:{Path('rel/s.journal').resolve()}"
    )
    assert studies.storage_spec("sqlite:///a.db", tmp_path) == "sqlite:///a.db"


def test_an_unreachable_database_is_one_line_within_seconds():
    started = time.monotonic()
    with pytest.raises(PeftlabError) as error:
        studies.open_storage(f"postgresql://u:pw@127.0.0.1:{free_port()}/db")
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert message.startswith("hydra.sweeper.storage='postgresql://u:***@127.0.0.1:")
    assert "cannot open the study's storage" in message and "\n" not in message


def test_a_storage_of_another_kind_names_the_kinds_allowed():
    with pytest.raises(PeftlabError) as error:
        studies.open_storage("redis://127.0.0.1/0")
    assert str(error.value).startswith(
        "hydra.sweeper.storage='redis://127.0.0.1/0' is not allowed: journal:PATH"
    )


def test_a_study_made_for_the_other_direction_is_refused_naming_both(tmp_path: Path):
    settings = studies.StudySettings(f"journal:{tmp_path}/s.journal", "s", "maximize", 60.0)
    studies.create_or_load(settings)
    settings.direction = "minimize"
    with pytest.raises(PeftlabError) as error:
        studies.create_or_load(settings)
    assert str(error.value).startswith(
        f"hydra.sweeper.direction='minimize': study 's' in journal:{tmp_path}/s.journal was "
        "made to maximize;"
    )


def test_the_budget_counts_done_and_running_trials_not_abandoned_ones(tmp_path: Path):
    study = journal(tmp_path)
    done = study.ask(SPACE)
    study.tell(done, 1.0)
    running = study.ask(SPACE)
    assert studies.budget_left(study, 3) == 1
    # No heartbeat for three intervals: its worker is gone. Its trial keeps its place till a
    # worker fails it (a trial asked meanwhile would leave its retry past the budget) ...
    time.sleep(0.1)
    assert not studies.is_live(study.get_trials()[running.number], heartbeat_s=0.01)
    assert studies.budget_left(study, 3) == 1
    # ... and then its retry takes it.
    (failed,) = studies.fail_abandoned(study, heartbeat_s=0.01)
    assert failed.number == running.number
    trials = study.get_trials()
    assert trials[running.number].state == TrialState.FAIL
    assert trials[running.number].user_attrs[studies.NOT_COUNTED_ATTR] == "abandoned"
    assert studies.budget_left(study, 3) == 2
    retry = study.ask(SPACE)  # the abandoned trial's parameters, asked again
    assert retry.params == running.params and retry.user_attrs["retry_of"] == running.number


def test_a_trials_run_and_worker_are_on_it_for_whoever_fails_it(tmp_path: Path):
    study = journal(tmp_path)
    trial = study.ask(SPACE)
    trial.set_user_attr(studies.WORKER_ATTR, "node-3:4242")
    studies.TrialLink(study, trial.number).record_run("run-of-the-job")  # its job, elsewhere
    assert studies.any_running(study)
    time.sleep(0.1)
    (failed,) = studies.fail_abandoned(study, heartbeat_s=0.01)
    assert failed.user_attrs[studies.RUN_ATTR] == "run-of-the-job"
    assert failed.user_attrs[studies.WORKER_ATTR] == "node-3:4242"
    assert not studies.any_running(study)  # the retry waits to be asked


def told_by(study: optuna.Study, worker: str, value: float = 1.0) -> None:
    trial = study.ask(SPACE)
    trial.set_user_attr(studies.WORKER_ATTR, worker)
    study.tell(trial, value)


def test_the_worker_that_told_the_last_trial_closes_the_parent(tmp_path: Path):
    study = journal(tmp_path)
    assert studies.closes_parent(study)  # none run here: a search started again, spent
    told_by(study, studies.this_process())
    told_by(study, "node-3:4242")
    assert not studies.closes_parent(study)  # node-3 ends it
    told_by(study, studies.this_process())
    assert studies.closes_parent(study)
    # node-3 died mid-trial and this worker failed its trial: told last, but not by its own.
    abandoned = study.ask(SPACE)
    abandoned.set_user_attr(studies.WORKER_ATTR, "node-3:4242")
    time.sleep(0.1)
    studies.fail_abandoned(study, heartbeat_s=0.01)
    assert studies.closes_parent(study)


def test_a_live_trial_keeps_its_place_while_its_worker_beats(tmp_path: Path):
    study = journal(tmp_path)
    trial = study.ask(SPACE)
    with studies.heartbeats(study, [trial._trial_id], interval_s=0.05):
        # Started 1 s ago: dead after 0.3 s without a beat (three intervals of 0.1 s), alive
        # with one every 0.05 s (a margin of six beats for a busy machine).
        time.sleep(1.0)
        assert studies.fail_abandoned(study, heartbeat_s=0.1) == []
    assert study.get_trials()[0].state == TrialState.RUNNING


def test_the_lowest_trial_numbers_keep_the_last_places_of_the_budget(tmp_path: Path):
    study = journal(tmp_path)
    first, second = study.ask(SPACE), study.ask(SPACE)  # two workers racing for one place
    assert not studies.over_budget(study, first.number, 1)
    assert studies.over_budget(study, second.number, 1)


EVERY_5 = studies.Reports(every=5, steps=42)  # the default run's 42 steps, a report every 5
NO_REPORTS = studies.Reports(every=None, steps=42)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: studies.make_sampler("cmaes", 0, {}, False, None), "one of tpe, random, gp"),
        (lambda: studies.make_sampler("tpe", 0, {"n_startup": 3}, False, None), "n_startup"),
        (lambda: studies.make_sampler("grid", 0, {}, False, None), "choices only"),
        (lambda: studies.make_pruner("sometimes", {}, EVERY_5), "one of median, percentile"),
        (lambda: studies.make_pruner("median", {}, NO_REPORTS), "set trainer.eval_strategy=steps"),
        (lambda: studies.make_pruner("median", {"warmup": 1}, EVERY_5), "warmup"),
        (lambda: studies.make_pruner("asha", {"reduction_factor": 1}, EVERY_5), "reduction_factor"),
        (lambda: studies.make_pruner("asha", {"rungs": 3}, EVERY_5), "rungs"),
    ],
)
def test_bad_sampler_and_pruner_settings_name_the_key(make, message):
    with pytest.raises(PeftlabError, match=message) as error:
        make()
    assert str(error.value).startswith("hydra.sweeper.")


def test_samplers_and_pruners_by_name_are_optunas_own():
    tpe = studies.make_sampler("tpe", 7, {}, parallel=True, grid=None)
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._constant_liar
    grid = studies.make_sampler("grid", 7, {}, parallel=False, grid={"x": [1, 2]})
    assert isinstance(grid, optuna.samplers.GridSampler)
    assert isinstance(studies.make_sampler("gp", 7, {}, False, None), optuna.samplers.GPSampler)
    assert isinstance(
        studies.make_sampler("random", 7, {}, True, None), optuna.samplers.RandomSampler
    )
    percentile = studies.make_pruner("percentile", {}, EVERY_5)
    assert isinstance(percentile, optuna.pruners.PercentilePruner)
    assert isinstance(studies.make_pruner("none", {}, NO_REPORTS), optuna.pruners.NopPruner)
    hyperband = studies.make_pruner("hyperband", {"min_resource": 4}, EVERY_5)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)


def test_multi_fidelity_pruners_have_their_rungs_on_the_reports():
    asha = studies.make_pruner("asha", {}, EVERY_5)
    assert isinstance(asha, optuna.pruners.SuccessiveHalvingPruner)
    assert (asha._min_resource, asha._reduction_factor) == (5, 3)  # rungs at 5, 15, 45 steps
    hyperband = studies.make_pruner("hyperband", {"reduction_factor": 2}, EVERY_5)
    assert (hyperband._min_resource, hyperband._max_resource) == (5, 42)
    assert hyperband._reduction_factor == 2  # a setting given wins over the default


def test_a_pruner_whose_trials_would_never_report_is_refused():
    with pytest.raises(PeftlabError, match="trainer.eval_steps=50 is more than the 42") as error:
        studies.make_pruner("asha", {}, studies.Reports(every=50, steps=42))
    assert "at most 42" in str(error.value)
    studies.make_pruner("none", {}, studies.Reports(every=50, steps=42))  # no pruner: no matter


def test_a_search_preset_reports_every_5_steps_of_the_default_run():
    config = compose_config(["hparams_search=optuna"])
    assert studies.Reports.of(config) == studies.Reports(every=5, steps=42)  # 7 a epoch, 6 epochs
    epochs = compose_config(["hparams_search=optuna", "trainer.eval_strategy=epoch"])
    assert studies.Reports.of(epochs).every == 7


def test_a_trial_trains_every_row_not_held_out_unless_told():
    held_out_6 = compose_config(["hparams_search=optuna", "dataset.eval_rows=6"])
    assert studies.Reports.of(held_out_6).steps == 60  # 80 of the 86 rows: 10 batches, 6 epochs
    rows_16 = compose_config(["hparams_search=optuna", "dataset.train_rows=16"])
    assert studies.Reports.of(rows_16).steps == 12


def test_workers_opening_a_new_database_at_once_all_get_its_tables(postgres):
    """The first creates Optuna's tables; the database refuses the others' CREATEs at once."""
    for attempt in range(3):
        url = postgres.create_database(f"at_once_{attempt}")
        start = threading.Barrier(4)

        def open_at_once(url=url, start=start):
            start.wait()
            return studies.open_storage(url)

        with ThreadPoolExecutor(4) as pool:
            storages = list(pool.map(lambda _: open_at_once(), range(4)))
        assert all(s.get_all_studies() == [] for s in storages)
