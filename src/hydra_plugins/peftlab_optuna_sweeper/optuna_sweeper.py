"""``hydra/sweeper: optuna``: a Hydra sweeper on current Optuna (ask -> overrides -> launch ->
tell), its trials launched through whatever ``hydra/launcher`` is configured.

Each round asks the study for up to ``n_jobs`` trials, launches them as one batch, and tells
the study each result: the held-out loss, PRUNED when the job's pruner stopped it (the job
reports its evaluations to the study itself, see :class:`peftlab.study.TrialLink`), or FAIL
with the job's error, and the search goes on. The budget ``n_trials`` is the study's: workers
started at once on one storage share it. Optuna is imported on first use, not when Hydra scans
its plugins at every start.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.peftlab_optuna_sweeper.config import OptunaSweeperConf  # noqa: F401 (registers)

if TYPE_CHECKING:
    import optuna
    from hydra.core.utils import JobReturn
    from optuna.distributions import BaseDistribution

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = OmegaConf.create(settings)
        self.config: DictConfig | None = None
        self.launcher = None
        self.client = None  # MLflow's, to end a dead worker's runs: made when one is found

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        from peftlab.errors import PeftlabError

        try:
            return self._search(arguments)
        except PeftlabError as error:
            raise SystemExit(f"error: {error}") from None

    def _search(self, arguments: list[str]) -> list[JobReturn]:
        from peftlab import study as studies

        fixed, space = search_space(arguments, self.settings.params)
        grid = None if self.settings.custom_search_space else _grid(space)
        n_trials = self.settings.n_trials
        if self.settings.sampler == "grid" and grid:
            n_trials = min(n_trials, _grid_size(grid))
        sampler = studies.make_sampler(
            self.settings.sampler,
            self.settings.seed,
            OmegaConf.to_container(self.settings.sampler_settings),
            parallel=self.settings.n_jobs > 1 or self.settings.storage is not None,
            grid=grid,
        )
        settings = studies.StudySettings.of(self.settings, Path(self.config.hydra.sweep.dir))
        study, _ = studies.create_or_load(settings, sampler, self.pruner())
        if not studies.created_here(study):  # a second worker: not the first one's points
            study.sampler.reseed_rng()
        custom = (
            get_method(self.settings.custom_search_space)
            if self.settings.custom_search_space
            else None
        )
        log.info(
            "Optuna study %s in %s: %d trials (%s sampler, %s pruner)",
            settings.study_name, settings.shown_storage, n_trials,
            self.settings.sampler, self.settings.pruner,
        )  # fmt: skip
        returns = self._trials(study, space, fixed, custom, n_trials, settings.heartbeat_s)
        _report_best(study)
        return returns

    def _trials(self, study, space, fixed, custom, n_trials, heartbeat_s) -> list[JobReturn]:
        """Ask, run and tell trials until the study's budget is spent and no trial of it runs
        anywhere: a worker that dies meanwhile has its trial retried by a survivor, so the
        study ends with its budget of trials, and every worker sees it ended."""
        from peftlab import study as studies

        returns: list[JobReturn] = []
        while True:
            self._fail_abandoned(study, heartbeat_s)
            batch = self._ask(study, space, custom, n_trials)
            if batch:
                returns += self._run(study, batch, fixed, heartbeat_s)
            elif studies.any_running(study):  # another worker's trial, which may yet fail
                time.sleep(studies.POLL_S)
            else:
                return returns

    def _fail_abandoned(self, study, heartbeat_s: float) -> None:
        """Fail a dead worker's trials, to be retried, and end their runs (KILLED, tagged
        ``worker_died``): no run of the search is left RUNNING."""
        from peftlab import study as studies
        from peftlab import tracking

        for trial in studies.fail_abandoned(study, heartbeat_s):
            run_id = trial.user_attrs.get(studies.RUN_ATTR)
            if run_id is None:  # the worker died before the trial's run started
                continue
            worker = trial.user_attrs.get(studies.WORKER_ATTR, "unknown")
            try:
                tracking.end_dead_workers_run(self._tracking_client(), run_id, worker)
            except tracking.STORE_ERRORS as error:
                log.warning("Run %s of a dead worker not ended: %s", run_id, tracking.short(error))

    def _tracking_client(self):
        from peftlab import tracking

        if self.client is None:
            self.client = tracking.client(self.config.tracking.uri)
        return self.client

    def pruner(self) -> optuna.pruners.BasePruner:
        from peftlab import study as studies

        return studies.make_pruner(
            self.settings.pruner,
            OmegaConf.to_container(self.settings.pruner_settings),
            studies.Reports.of(self.config),
        )

    def _ask(self, study, space, custom, n_trials: int) -> list:
        """Up to n_jobs new trials of the budget that is left (none when it is spent)."""
        from peftlab import study as studies

        wanted = min(self.settings.n_jobs, studies.budget_left(study, n_trials))
        batch = []
        for _ in range(max(wanted, 0)):
            trial = study.ask(fixed_distributions=space)
            trial.set_user_attr(studies.WORKER_ATTR, studies.this_process())
            if studies.over_budget(study, trial.number, n_trials):
                trial.set_user_attr(studies.NOT_COUNTED_ATTR, "over budget: another worker ran it")
                study.tell(trial, state=studies.TrialState.FAIL)
                break
            if custom is not None:
                custom(self.config, trial)
            batch.append(trial)
        return batch

    def _run(self, study, batch: list, fixed: list[str], heartbeat_s: float) -> list[JobReturn]:
        """Launch one batch of trials and tell the study how each ended."""
        from peftlab import study as studies

        jobs = [[*fixed, *trial_overrides(trial)] for trial in batch]
        self.validate_batch_is_legal(jobs)
        told: set[int] = set()
        try:
            with studies.heartbeats(study, [t._trial_id for t in batch], heartbeat_s):
                returns = self.launcher.launch(jobs, initial_job_idx=batch[0].number)
            for trial, job in zip(batch, returns, strict=True):
                told.add(trial.number)
                _tell(study, trial, job)
        finally:  # interrupted: the trials not told are no trials of the budget
            for trial in batch:
                if trial.number not in told:
                    trial.set_user_attr(studies.NOT_COUNTED_ATTR, "interrupted")
                    study.tell(trial, state=studies.TrialState.FAIL)
        return list(returns)


def search_space(
    arguments: list[str], params: DictConfig | None
) -> tuple[list[str], dict[str, BaseDistribution]]:
    """The command line's fixed overrides, and the distributions of every swept key: sweep
    overrides (``a=1,2``) and ``hydra.sweeper.params`` (Hydra's sweep syntax)."""
    parser = OverridesParser.create()
    fixed, space = [], {}
    for override in parser.parse_overrides(arguments):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line)
    for key, value in (params or {}).items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed.append(override.input_line)
    return fixed, space


def distribution(override: Override) -> BaseDistribution:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(value.list))
    if isinstance(value, RangeSweep):
        return CategoricalDistribution(list(value.range()))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags or all(isinstance(v, int) for v in (value.start, value.end)):
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ValueError(f"{override.input_line}: not a search space Optuna can sample")


def trial_overrides(trial: optuna.trial.Trial) -> list[str]:
    """The trial's values as overrides, and the trial's number for its job."""
    return [
        *(f"{key}={value}" for key, value in trial.params.items()),
        f"hydra.sweeper.trial={trial.number}",
    ]


def _tell(study, trial, job: JobReturn) -> None:
    from hydra.core.utils import JobStatus

    from peftlab import study as studies
    from peftlab.redaction import redact

    if job.status != JobStatus.COMPLETED:
        trial.set_user_attr(studies.ERROR_ATTR, redact(f"{job._return_value!r}")[:1000])
        _told(study, trial, state=studies.TrialState.FAIL)
        log.warning("Trial %d failed: %s", trial.number, redact(str(job._return_value))[:300])
        return
    pruned = study._storage.get_trial(trial._trial_id).user_attrs.get(studies.PRUNED_ATTR)
    if pruned is not None:
        _told(study, trial, state=studies.TrialState.PRUNED)
        log.info("Trial %d pruned at step %s", trial.number, pruned)
    else:
        _told(study, trial, job.return_value)


def _told(study, trial, *args, **kwargs) -> None:
    """``study.tell``; the grid sampler then calls ``study.stop()`` once every point is taken,
    which Optuna allows only inside ``optimize``: the budget stops this loop already."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise


def _grid(space: dict[str, BaseDistribution]) -> dict[str, list] | None:
    """The space as a grid (every key a list of choices), if it is one."""
    from optuna.distributions import CategoricalDistribution

    if not space or not all(isinstance(d, CategoricalDistribution) for d in space.values()):
        return None
    return {key: list(d.choices) for key, d in space.items()}


def _grid_size(grid: dict[str, list]) -> int:
    size = 1
    for choices in grid.values():
        size *= len(choices)
    return size


def _report_best(study) -> None:
    from peftlab import study as studies

    completed = [t for t in studies.trials(study) if t.state == studies.TrialState.COMPLETE]
    if not completed:
        log.warning("No trial of study %s completed", study.study_name)
        return
    log.info("Best parameters: %s", study.best_trial.params)
    log.info("Best value: %s", study.best_value)
