"""The Optuna study of a search, shared by its workers and by the jobs that run its trials.

A search (``train.py -m hparams_search=...``) keeps its study in a storage every process can
reach: a journal file (the default, in the sweep folder; ``journal:PATH`` on a shared file
system) or a database (``postgresql+psycopg://...``, ``mysql://...``, ``sqlite:///...``). The
same command started on N machines runs one study: the budget of trials is the study's, the
first worker creates the study's MLflow parent run and the others find it in the study.

Jobs open the same study to report their held-out losses (:class:`TrialLink`), so pruning works
whatever process a trial runs in. Optuna is imported here, never by the config schemas.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import optuna
import sqlalchemy.exc
from omegaconf import OmegaConf
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from peftlab import data
from peftlab.errors import PeftlabError, require
from peftlab.redaction import redact
from peftlab.schema import DatasetConfig, typed_section

log = logging.getLogger(__name__)

JOURNAL_FILE = "optuna.journal"  # the default storage, in the sweep folder
JOURNAL_PREFIX = "journal:"
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
CONNECT_TIMEOUT_S = 5
SCHEMA_ATTEMPTS = 4
# Study user attributes.
PARENT_ATTR = "mlflow_parent_run_id"
CREATOR_ATTR = "created_by"  # host:pid of the worker that created the study
# Trial user and system attributes.
PRUNED_ATTR = "pruned_step"  # set by the job whose training the pruner stopped
NOT_COUNTED_ATTR = "not_counted"  # a failed trial that is no trial of the budget (why)
ERROR_ATTR = "error"
RUN_ATTR = "mlflow_run_id"  # the MLflow run of the trial's job, set as soon as it starts
WORKER_ATTR = "worker"  # host:pid of the worker that asked for the trial (whose beats keep it)
HEARTBEAT_ATTR = "peftlab:heartbeat"  # seconds since the epoch, written by the trial's worker
STALE_AFTER_BEATS = 3  # a RUNNING trial without a heartbeat for this many intervals is dead
PARENT_WAIT_S = 60.0  # how long a worker waits for the first worker's parent run
POLL_S = 2.0  # how often a worker with no trial left to ask looks at the others' again


def storage_spec(storage: str | None, sweep_dir: Path) -> str:
    """The storage as an absolute spec: ``journal:/abs/path`` or a database URL."""
    if not storage:
        return f"{JOURNAL_PREFIX}{(sweep_dir / JOURNAL_FILE).resolve()}"
    if storage.startswith(JOURNAL_PREFIX):
        return f"{JOURNAL_PREFIX}{Path(storage[len(JOURNAL_PREFIX) :]).expanduser().resolve()}"
    return storage


def open_storage(spec: str) -> BaseStorage:
    """The storage behind ``spec``, reachable, or one line saying why not (within seconds)."""
    try:
        if spec.startswith(JOURNAL_PREFIX):
            path = Path(spec[len(JOURNAL_PREFIX) :])
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        scheme = urlparse(spec).scheme.split("+")[0]
        if scheme not in RDB_SCHEMES:
            raise PeftlabError(
                f"hydra.sweeper.storage={spec!r} is not allowed: journal:PATH (a file, "
                "shared file systems too), sqlite:///PATH, postgresql+psycopg://USER@HOST/DB or "
                "mysql://USER@HOST/DB"
            )
        return _rdb_storage(_with_driver(spec), scheme)
    except PeftlabError:
        raise
    except Exception as error:  # the database's driver, network or file system, in one line
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise PeftlabError(
            f"hydra.sweeper.storage={spec!r}: cannot open the study's storage "
            f"({type(error).__name__}: {reason})"
        ) from None


def _rdb_storage(url: str, scheme: str) -> RDBStorage:
    """A database storage, its tables created by the first worker. Workers started at once on
    a new database race to create them: the database refuses all but one, and the others find
    the tables on a second look."""
    for attempt in range(1, SCHEMA_ATTEMPTS):
        try:
            return RDBStorage(url, engine_kwargs=_engine_kwargs(scheme))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            time.sleep(0.5 * attempt)
    return RDBStorage(url, engine_kwargs=_engine_kwargs(scheme))  # its error is the one shown


def _with_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3, the driver peftlab installs (SQLAlchemy's default
    for the bare scheme is psycopg2)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _engine_kwargs(scheme: str) -> dict[str, Any]:
    # An unreachable server fails in seconds, not after the system's TCP timeout.
    if scheme in ("postgresql", "mysql"):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {}


@dataclass
class StudySettings:
    """What a worker and a job need to open the search's study: from ``hydra.sweeper``."""

    storage: str  # an absolute spec (see storage_spec)
    study_name: str
    direction: str
    heartbeat_s: float

    @classmethod
    def of(cls, sweeper: Any, sweep_dir: Path) -> StudySettings:
        return cls(
            storage=storage_spec(sweeper.storage, sweep_dir),
            study_name=sweeper.study_name,
            direction=sweeper.direction,
            heartbeat_s=float(sweeper.heartbeat_s),
        )

    @property
    def shown_storage(self) -> str:
        return redact(self.storage)


def create_or_load(
    settings: StudySettings,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> tuple[optuna.Study, bool]:
    """The study, and whether this call created it: of N workers started at once, exactly one
    creates it (the storage refuses a second study of the same name)."""
    storage = open_storage(settings.storage)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=settings.study_name,
            direction=settings.direction,
            sampler=sampler,
            pruner=pruner,
        )
        study.set_user_attr(CREATOR_ATTR, this_process())
        return study, True
    except DuplicatedStudyError:
        study = optuna.load_study(
            study_name=settings.study_name, storage=storage, sampler=sampler, pruner=pruner
        )
    if study.direction.name.lower() != settings.direction:
        raise PeftlabError(
            f"hydra.sweeper.direction={settings.direction!r}: study {settings.study_name!r} in "
            f"{settings.shown_storage} was made to {study.direction.name.lower()}; pass that "
            "direction, or another hydra.sweeper.study_name for a new study"
        )
    return study, False


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def created_here(study: optuna.Study) -> bool:
    """Whether this process created the study (its first worker), rather than joined it."""
    return study.user_attrs.get(CREATOR_ATTR) == this_process()


def parent_run_id(study: optuna.Study, created: bool, create: Callable[[], str]) -> str:
    """The study's MLflow parent run: made by the worker that created the study, found by the
    others (and by a search started again on the same study)."""
    if created:
        run_id = create()
        study.set_user_attr(PARENT_ATTR, run_id)
        return run_id
    deadline = time.monotonic() + PARENT_WAIT_S
    while time.monotonic() < deadline:
        found = study.user_attrs.get(PARENT_ATTR)  # each read fetches the storage anew
        if found:
            return found
        time.sleep(0.5)
    # The worker that created the study died before its parent run existed: take its place.
    log.warning("Study %s has no MLflow parent run: creating one", study.study_name)
    run_id = create()
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Trials that ran to an end: completed, pruned, or failed by their job's error. Not: one
    abandoned by a dead worker (retried), one asked past the budget by a racing worker."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and NOT_COUNTED_ATTR not in trial.user_attrs


def is_live(trial: FrozenTrial, heartbeat_s: float, now: float | None = None) -> bool:
    """A RUNNING trial whose worker has beaten recently."""
    if trial.state != TrialState.RUNNING:
        return False
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    if beat is None:  # asked, first beat not yet written
        beat = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
    return (now or time.time()) - beat < STALE_AFTER_BEATS * heartbeat_s


def trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False)


def takes_budget(trial: FrozenTrial) -> bool:
    """Done, or RUNNING anywhere: a dead worker's trial too, until a worker fails it (each does
    before it asks) and its retry takes its place; else a trial asked meanwhile would fill the
    slot, and the retry would be one too many."""
    return counts_toward_budget(trial) or trial.state == TrialState.RUNNING


def budget_left(study: optuna.Study, n_trials: int) -> int:
    """Trials still to ask for: the budget less those done and those running anywhere."""
    return n_trials - sum(takes_budget(t) for t in trials(study))


def over_budget(study: optuna.Study, trial_number: int, n_trials: int) -> bool:
    """Whether a trial just asked is one too many: workers racing for the last trials each ask
    one; trial numbers are handed out in order, so the lowest numbers keep their place."""
    before = [t for t in trials(study) if t.number < trial_number and takes_budget(t)]
    return len(before) >= n_trials


def fail_abandoned(study: optuna.Study, heartbeat_s: float) -> list[FrozenTrial]:
    """Fail the trials whose worker stopped beating (killed) and ask for their parameters again:
    they are retried, not counted as done. Returns the trials this call failed (their runs are
    the caller's to end: see tracking.end_dead_workers_run)."""
    now = time.time()
    abandoned = [
        t
        for t in trials(study)
        if t.state == TrialState.RUNNING and not is_live(t, heartbeat_s, now)
    ]
    failed = []
    for trial in abandoned:
        try:
            study._storage.set_trial_user_attr(trial._trial_id, NOT_COUNTED_ATTR, "abandoned")
            study.tell(trial.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError, RuntimeError):
            continue  # its worker, or another one, finished it meanwhile
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        failed.append(trial)
    if failed:
        log.warning(
            "Trials %s were left running by a stopped worker: failed, to be retried",
            [t.number for t in failed],
        )
    return failed


def any_running(study: optuna.Study) -> bool:
    """Whether a trial of the study is RUNNING anywhere: live, or its worker's death not yet
    noticed (fail_abandoned fails it once its heartbeat is stale)."""
    return any(t.state == TrialState.RUNNING for t in trials(study))


def closes_parent(study: optuna.Study) -> bool:
    """Whether this worker ends the study's parent run, once no trial runs: the worker that
    told the study's last trial (every worker reads the same finished study, so one does), and
    one that ran none of it (a search started again with its budget spent: it reopened it)."""
    told = [
        t
        for t in trials(study)
        if t.state.is_finished() and t.user_attrs.get(NOT_COUNTED_ATTR) != "abandoned"
    ]  # an abandoned trial was told by another worker than its own
    mine = [t for t in told if t.user_attrs.get(WORKER_ATTR) == this_process()]
    if not mine:
        return True
    last = max(told, key=lambda t: (t.datetime_complete, t.number))
    return last.user_attrs.get(WORKER_ATTR) == this_process()


@contextmanager
def heartbeats(study: optuna.Study, trial_ids: list[int], interval_s: float) -> Iterator[None]:
    """Within: the trials' heartbeat is written every ``interval_s``, marking them as alive."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in trial_ids:
                try:
                    study._storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
                except (UpdateFinishedTrialError, KeyError):
                    pass  # told already
                except Exception as error:  # a storage hiccup costs a beat, not the search
                    log.warning("Optuna heartbeat not written: %s", redact(str(error))[:200])
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def trial_link(sweeper: Any, sweep_dir: Path, config: Any) -> TrialLink | None:
    """The trial a job of a search runs (``hydra.sweeper.trial``, set by the sweeper on each
    job it launches), on the study with its pruner (for the job's ``config``: its reports);
    None for any other job."""
    if sweeper.get("trial") is None or sweeper.get("study_name") is None:
        return None
    settings = StudySettings.of(sweeper, sweep_dir)
    pruner = make_pruner(sweeper.pruner, dict(sweeper.pruner_settings), Reports.of(config))
    study = optuna.load_study(
        study_name=settings.study_name, storage=open_storage(settings.storage), pruner=pruner
    )
    return TrialLink(study, sweeper.trial)


class TrialLink:
    """A job's handle on the trial it runs: reports each held-out evaluation and asks the
    study's pruner whether to stop, through the storage (the trial may be another process's)."""

    def __init__(self, study: optuna.Study, trial_number: int) -> None:
        self.study = study
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, trial_number
        )
        self.trial = optuna.trial.Trial(study, trial_id)
        self.number = trial_number
        self.pruned_step: int | None = None

    def record_run(self, run_id: str) -> None:
        """The trial's MLflow run: a survivor ends it if this trial's worker dies."""
        self.trial.set_user_attr(RUN_ATTR, run_id)

    def report(self, eval_loss: float, step: int) -> bool:
        """Report an evaluation; True when the pruner says this trial should stop here."""
        self.trial.report(eval_loss, step)
        if self.trial.should_prune():
            self.pruned_step = step
            self.trial.set_user_attr(PRUNED_ATTR, step)
            return True
        return False


# Samplers and pruners by the names `hydra.sweeper.sampler` / `.pruner` take; each gets its
# `*_settings` as keyword arguments of the Optuna class.
def _tpe(seed, settings, parallel, grid):
    # multivariate + group: TPE models keys jointly, also in a space conditional on the method;
    # constant liar keeps parallel workers from asking for the same point.
    options = {"multivariate": True, "group": True, "constant_liar": parallel, **settings}
    with warnings.catch_warnings():  # `group` is flagged experimental, as it has been since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, **options)


def _random(seed, settings, parallel, grid):
    return optuna.samplers.RandomSampler(seed=seed, **settings)


def _gp(seed, settings, parallel, grid):
    return optuna.samplers.GPSampler(seed=seed, **settings)


def _grid(seed, settings, parallel, grid):
    if not grid:
        raise PeftlabError(
            "hydra.sweeper.sampler='grid' needs a search space of choices only "
            "(hydra.sweeper.params or a,b,c overrides), not a custom search space"
        )
    return optuna.samplers.GridSampler(grid, seed=seed, **settings)


SAMPLERS = {"tpe": _tpe, "random": _random, "gp": _gp, "grid": _grid}


@dataclass(frozen=True)
class Reports:
    """When a trial reports its held-out loss to its pruner, in optimizer steps, as its config
    plans its training (``trainer``, and the rows it trains: ``dataset.train_rows``, or with
    null every row its data holds that is not held out)."""

    every: int | None  # steps between reports: eval_steps, or an epoch's; None: no reports
    steps: int  # the steps a trial trains

    @classmethod
    def of(cls, config: Any) -> Reports:
        trainer = config.trainer
        rows = config.dataset.train_rows
        if rows is None:
            rows = len(data.load_splits(typed_section(config, "dataset", DatasetConfig)).train)
        per_epoch = math.ceil(rows / trainer.per_device_train_batch_size)
        every = {"steps": trainer.eval_steps, "epoch": per_epoch}.get(trainer.eval_strategy)
        return cls(every, math.ceil(per_epoch * trainer.num_train_epochs))


# Multi-fidelity pruners judge a trial at rungs of min_resource * reduction_factor**k steps. The
# first rung is the first report; a factor of 3 puts every rung on a report (a multiple of the
# first) and keeps a third of the trials at each: with the default run's 42 steps and a report
# every 5, rungs at 5 and 15 steps, a ninth of the trials trained to the end. Hyperband's
# brackets span the reports up to a trial's planned steps.
def _asha(reports: Reports, settings: dict) -> optuna.pruners.BasePruner:
    defaults = {"min_resource": reports.every, "reduction_factor": 3}
    return optuna.pruners.SuccessiveHalvingPruner(**{**defaults, **settings})


def _hyperband(reports: Reports, settings: dict) -> optuna.pruners.BasePruner:
    defaults = {"min_resource": reports.every, "max_resource": reports.steps, "reduction_factor": 3}
    return optuna.pruners.HyperbandPruner(**{**defaults, **settings})


PRUNERS = {
    "median": lambda reports, s: optuna.pruners.MedianPruner(**s),
    "percentile": lambda reports, s: optuna.pruners.PercentilePruner(**{"percentile": 25.0, **s}),
    "asha": _asha,
    "hyperband": _hyperband,
    "none": lambda reports, s: optuna.pruners.NopPruner(**s),
}


def make_sampler(
    name: str, seed: int | None, settings: dict, parallel: bool, grid: dict | None
) -> optuna.samplers.BaseSampler:
    _require_known("hydra.sweeper.sampler", name, SAMPLERS)
    return _construct(
        "hydra.sweeper.sampler_settings", lambda: SAMPLERS[name](seed, settings, parallel, grid)
    )


def make_pruner(name: str, settings: dict, reports: Reports) -> optuna.pruners.BasePruner:
    """The pruner for trials that report as ``reports`` says; one that would get no report to
    act on is a mistake."""
    _require_known("hydra.sweeper.pruner", name, PRUNERS)
    if name != "none" and reports.every is None:
        raise PeftlabError(
            f"hydra.sweeper.pruner={name!r} needs held-out evaluations during training to act "
            "on: set trainer.eval_strategy=steps with trainer.eval_steps=N (or epoch)"
        )
    if name != "none" and reports.every > reports.steps:
        raise PeftlabError(
            f"trainer.eval_steps={reports.every} is more than the {reports.steps} optimizer "
            f"steps a trial trains: hydra.sweeper.pruner={name!r} would get no report; set "
            f"trainer.eval_steps to at most {reports.steps}"
        )
    return _construct("hydra.sweeper.pruner_settings", lambda: PRUNERS[name](reports, settings))


def check_search(sweeper: Any, config: Any) -> None:
    """The sampler's and pruner's names and the pruner's settings, and single-process trials
    (a trial reports to its study and is pruned in one process), before anything starts."""
    _require_known("hydra.sweeper.sampler", sweeper.sampler, SAMPLERS)
    tasks = OmegaConf.select(config, "hydra.launcher.tasks_per_node", default=None)
    require(tasks in (None, 1), "hydra.launcher.tasks_per_node", tasks,
            "1 in a search (its trials are single-process jobs)")  # fmt: skip
    make_pruner(sweeper.pruner, dict(sweeper.pruner_settings), Reports.of(config))


def _require_known(key: str, name: str, known: dict) -> None:
    if name not in known:
        raise PeftlabError(f"{key}={name!r} is not allowed: one of {', '.join(known)}")


def _construct(key: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except (TypeError, ValueError) as error:  # a misspelled or out-of-range setting
        raise PeftlabError(f"{key}: {error}") from None
