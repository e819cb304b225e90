"""Sweeps in MLflow: one parent run per Hydra multirun, each job a child run named by its overrides.

The parent's lifecycle belongs to a Hydra callback in the launching process. Jobs may run in
other processes (joblib, submitit), so the callback leaves the parent's id in the sweep
directory, where every job finds it.
"""

from __future__ import annotations

import atexit
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from peftlab import names
from peftlab.config import TrackingConfig
from peftlab.errors import PeftlabError
from peftlab.output_dirs import require_writable
from peftlab.redaction import redact_values

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from peftlab.study import TrialLink

log = logging.getLogger(__name__)


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self._client: MlflowClient | None = None
        self._parent_id: str | None = None
        self._study: SharedStudy | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns an exception in a callback into a warning and sweeps on: jobs would run
        # without their parent. SystemExit is not an Exception, so it stops the sweep.
        try:
            self._start(config)
        except Exception as error:
            raise SystemExit(f"error: the sweep's MLflow parent run: {error!r}") from error

    def _start(self, config: DictConfig) -> None:
        from peftlab import console, tracking

        HydraConfig.instance().set_config(config)  # lets ${hydra:...} resolve before any job
        sweep_dir = Path(config.hydra.sweep.dir)
        require_writable("hydra.sweep.dir", sweep_dir)
        console.quiet_libraries()
        cfg = TrackingConfig(**OmegaConf.to_container(config.tracking, resolve=True))
        try:
            experiment_id = tracking.use_store(cfg)  # a server that does not answer: at once
            # Then the sweep runs unattended: its calls outlast a server restart.
            tracking.retry_requests(cfg.uri, tracking.IN_A_SWEEP)
            self._client = tracking.client(cfg.uri)
            self._study = shared_study(config)
            if self._study is None:
                self._parent_id = self._create_parent(config, experiment_id)
            else:
                from peftlab import study as studies

                self._parent_id = studies.parent_run_id(
                    self._study.study,
                    self._study.created,
                    lambda: self._create_parent(config, experiment_id, self._study.tags),
                )
                self._client.update_run(self._parent_id, status="RUNNING")  # a search continued
        except PeftlabError as error:
            raise SystemExit(f"error: {error}") from None
        overrides = list(config.hydra.overrides.task)
        swept = swept_keys(overrides, config.hydra.sweeper.get("params"))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        fixed = [_key(o) for o in overrides if _key(o) not in swept]
        (sweep_dir / names.SWEEP_FILE).write_text(
            json.dumps({"parent_run_id": self._parent_id, "swept_keys": swept, "fixed_keys": fixed})
        )
        # Hydra skips on_multirun_end when a job failed; the parent must not stay RUNNING.
        atexit.register(self._close, "FAILED")
        log.info("MLflow sweep run %s (%d swept keys)", self._parent_id, len(swept))

    def _create_parent(
        self, config: DictConfig, experiment_id: str, extra_tags: dict[str, str] | None = None
    ) -> str:
        """The sweep's parent run, its params the sweep's resolved base config."""
        from peftlab import tracking

        overrides = list(config.hydra.overrides.task)
        swept = swept_keys(overrides, config.hydra.sweeper.get("params"))
        parent = self._client.create_run(
            experiment_id,
            run_name=" ".join(["sweep", *swept_overrides(overrides, swept)]),
            tags={
                names.SWEEP_TAG: "true",
                names.SWEEP_DIR_TAG: str(Path(config.hydra.sweep.dir).resolve()),
                names.SWEPT_KEYS_TAG: ",".join(swept),
                **(extra_tags or {}),
            },
        )
        params = {"sweep.overrides": " ".join(overrides), **tracking.flatten(base_config(config))}
        for key, value in redact_values(params).items():
            self._client.log_param(parent.info.run_id, key, value)
        return parent.info.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close("FINISHED")

    def _close(self, status: str) -> None:
        """The sweep's result on its parent run (what its collapsed row in the UI shows). A
        study's parent is shared: the worker that ends its last trial closes it."""
        if self._client is None or self._parent_id is None:
            return
        if self._study is not None and not self._study.closes_parent():
            log.info("Another worker of this study closes its parent run")
            self._parent_id = None
            return
        client, parent_id, self._parent_id = self._client, self._parent_id, None
        experiment_id = client.get_run(parent_id).info.experiment_id
        children = counted_runs(
            client.search_runs([experiment_id], f"tags.{names.PARENT_TAG} = '{parent_id}'")
        )
        finished = [child for child in children if child.info.status == "FINISHED"]
        failed = [child for child in children if child.info.status == "FAILED"]
        client.set_tag(parent_id, names.FINISHED_JOBS_TAG, str(len(finished)))
        client.set_tag(parent_id, names.FAILED_JOBS_TAG, str(len(failed)))
        client.set_tag(
            parent_id,
            names.PRUNED_JOBS_TAG,
            str(sum(names.PRUNED_TAG in c.data.tags for c in finished)),
        )
        # What the search spent: its trials' steps and tokens (a pruned trial's up to its stop).
        for name in (names.SEARCH_STEPS, names.SEARCH_TOKENS):
            spent = [c.data.metrics[name] for c in children if name in c.data.metrics]
            if spent:
                client.log_metric(parent_id, name, sum(spent))
        best = best_run(finished)
        if best is not None:
            client.log_metric(parent_id, names.BEST_EVAL_LOSS, best.data.metrics[names.EVAL_LOSS])
            client.set_tag(parent_id, names.BEST_RUN_ID_TAG, best.info.run_id)
            client.set_tag(parent_id, names.BEST_RUN_NAME_TAG, best.info.run_name)
        if any(child.info.status == "KILLED" for child in children):
            # A job's run was left to resume: the sweep was interrupted with it, or its
            # launcher did not requeue it (app.NotRequeued, the line the sweep ended on).
            status = "KILLED"
        client.set_terminated(parent_id, status)
        from peftlab import shared_view  # the runs side by side in the UI, best first

        link = shared_view.sweep_link(client, experiment_id, parent_id)
        print(f"MLflow sweep {parent_id}: {link}", flush=True)


def counted_runs(children: list[Run]) -> list[Run]:
    """A sweep's job runs less those of trials a dead worker left (their trials were retried:
    ``worker_died``), so the parent's results are the study's."""
    return [child for child in children if names.WORKER_DIED_TAG not in child.data.tags]


def best_run(finished: list[Run]) -> Run | None:
    """The finished run of lowest eval_loss; a run the pruner stopped early ranks only when no
    run trained to its end."""
    scored = [run for run in finished if names.EVAL_LOSS in run.data.metrics]
    completed = [run for run in scored if names.PRUNED_TAG not in run.data.tags] or scored
    return min(completed, key=lambda run: run.data.metrics[names.EVAL_LOSS], default=None)


class SharedStudy:
    """The Optuna study of a search, as the sweep's parent run needs it."""

    def __init__(self, config: DictConfig) -> None:
        from peftlab import study as studies

        sweeper = config.hydra.sweeper
        self.settings = studies.StudySettings.of(sweeper, Path(config.hydra.sweep.dir))
        studies.check_search(sweeper, config)
        self.study, self.created = studies.create_or_load(self.settings)
        self.tags = {
            names.STUDY_TAG: self.settings.study_name,
            names.STORAGE_TAG: self.settings.shown_storage,
        }

    def closes_parent(self) -> bool:
        """Whether this worker ends the parent run: not while another worker's trial is live
        (a worker ending on an error or Ctrl-C), else as study.closes_parent says."""
        from peftlab import study as studies

        trials = studies.trials(self.study)
        if any(studies.is_live(t, self.settings.heartbeat_s) for t in trials):
            return False
        return studies.closes_parent(self.study)


def shared_study(config: DictConfig) -> SharedStudy | None:
    """The search's study, for sweepers that keep one (``hydra.sweeper.study_name``)."""
    if OmegaConf.select(config, "hydra.sweeper.study_name") is None:
        return None
    return SharedStudy(config)


def swept_keys(overrides: list[str], sweeper_params: Any) -> list[str]:
    """Keys the sweep varies: sweep overrides (``a=1,2``) and a sweeper's search space."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    keys = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    if sweeper_params:
        keys += [key for key in sweeper_params if key not in keys]
    return keys


def swept_overrides(overrides: list[str], keys: list[str]) -> list[str]:
    """The overrides that set a swept key, in the order of ``keys``."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    swept = [o for o in parsed if o.get_key_element() in keys]
    swept.sort(key=lambda o: keys.index(o.get_key_element()))
    return [o.input_line for o in swept]


def base_config(config: DictConfig) -> dict[str, Any]:
    """The sweep's resolved config, less Hydra's own and per-job keys."""
    keys = [key for key in config if key not in {"hydra", "output_dir"}]
    return {key: _plain(config[key]) for key in keys}


def _plain(value: Any) -> Any:
    """A config section as plain, resolved containers; a top-level value (``resume``) as is."""
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    return value


def job_identity(hydra_cfg: DictConfig) -> tuple[str | None, dict[str, str]]:
    """Run name and tags of a job of a sweep; nothing for a single run."""
    sweep_file = Path(hydra_cfg.sweep.dir) / names.SWEEP_FILE
    if not sweep_file.is_file():
        return None, {}
    sweep = json.loads(sweep_file.read_text())
    # What this job sets that the sweep's command line did not fix: the values swept, or a
    # search's trial (whose keys a custom search space picks as it goes).
    varied = [o for o in hydra_cfg.overrides.task if _key(o) not in sweep["fixed_keys"]]
    keys = sweep["swept_keys"]

    def position(override: str) -> int:  # the sweep's order of keys, not Hydra's
        return keys.index(_key(override)) if _key(override) in keys else len(keys)

    varied.sort(key=position)
    name = ",".join(varied)
    tags = {
        names.PARENT_TAG: sweep["parent_run_id"],
        names.SWEEP_ID_TAG: sweep["parent_run_id"],
        names.JOB_NUM_TAG: str(hydra_cfg.job.num),
    }
    return name or f"job {hydra_cfg.job.num}", tags


def trial_of_job(hydra_cfg: DictConfig, config: DictConfig) -> TrialLink | None:
    """The Optuna trial a job of a search runs, to report its evaluations to; None otherwise."""
    if OmegaConf.select(hydra_cfg, "sweeper.trial") is None:
        return None
    from peftlab import study

    return study.trial_link(hydra_cfg.sweeper, Path(hydra_cfg.sweep.dir), config)


def _key(override: str) -> str:
    return override.split("=", 1)[0]
