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

from peftlab.config import TrackingConfig
from peftlab.errors import PeftlabError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "peftlab.sweep"


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self._client: MlflowClient | None = None
        self._parent_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns an exception in a callback into a warning and sweeps on: jobs would run
        # without their parent. SystemExit is not an Exception, so it stops the sweep.
        try:
            self._start(config)
        except Exception as error:
            raise SystemExit(f"error: the sweep's MLflow parent run: {error!r}") from error

    def _start(self, config: DictConfig) -> None:
        from peftlab import app, console, tracking

        HydraConfig.instance().set_config(config)  # lets ${hydra:...} resolve before any job
        app.require_writable("hydra.sweep.dir", Path(config.hydra.sweep.dir))
        console.quiet_libraries()
        cfg = TrackingConfig(**OmegaConf.to_container(config.tracking, resolve=True))
        try:
            experiment_id = tracking.use_store(cfg)
        except PeftlabError as error:
            raise SystemExit(f"error: {error}") from None
        overrides = list(config.hydra.overrides.task)
        swept = swept_keys(overrides, config.hydra.sweeper.get("params"))
        sweep_dir = Path(config.hydra.sweep.dir)
        self._client = tracking.client(cfg.uri)
        parent = self._client.create_run(
            experiment_id,
            run_name=" ".join(["sweep", *swept_overrides(overrides, swept)]),
            tags={
                SWEEP_TAG: "true",
                "sweep_dir": str(sweep_dir.resolve()),
                "swept_keys": ",".join(swept),
            },
        )
        self._parent_id = parent.info.run_id
        params = {"sweep.overrides": " ".join(overrides), **tracking.flatten(base_config(config))}
        for key, value in params.items():
            self._client.log_param(self._parent_id, key, value)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        fixed = [_key(o) for o in overrides if _key(o) not in swept]
        (sweep_dir / SWEEP_FILE).write_text(
            json.dumps({"parent_run_id": self._parent_id, "swept_keys": swept, "fixed_keys": fixed})
        )
        # Hydra skips on_multirun_end when a job failed; the parent must not stay RUNNING.
        atexit.register(self._close, "FAILED")
        log.info("MLflow sweep run %s (%d swept keys)", self._parent_id, len(swept))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close("FINISHED")

    def _close(self, status: str) -> None:
        """The sweep's result on its parent run (what its collapsed row in the UI shows)."""
        if self._client is None or self._parent_id is None:
            return
        client, parent_id, self._parent_id = self._client, self._parent_id, None
        experiment_id = client.get_run(parent_id).info.experiment_id
        children = client.search_runs([experiment_id], f"tags.{PARENT_TAG} = '{parent_id}'")
        finished = [child for child in children if child.info.status == "FINISHED"]
        failed = [child for child in children if child.info.status == "FAILED"]
        client.set_tag(parent_id, "finished_jobs", str(len(finished)))
        client.set_tag(parent_id, "failed_jobs", str(len(failed)))
        scored = [child for child in finished if "eval_loss" in child.data.metrics]
        if scored:
            best = min(scored, key=lambda child: child.data.metrics["eval_loss"])
            client.log_metric(parent_id, "best_eval_loss", best.data.metrics["eval_loss"])
            client.set_tag(parent_id, "best_run_id", best.info.run_id)
            client.set_tag(parent_id, "best_run_name", best.info.run_name)
        if any(child.info.status == "KILLED" for child in children):
            status = "KILLED"  # a job was interrupted, and the sweep with it
        client.set_terminated(parent_id, status)


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
    sweep_file = Path(hydra_cfg.sweep.dir) / SWEEP_FILE
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
        PARENT_TAG: sweep["parent_run_id"],
        "sweep_id": sweep["parent_run_id"],
        "job_num": str(hydra_cfg.job.num),
    }
    return name or f"job {hydra_cfg.job.num}", tags


def _key(override: str) -> str:
    return override.split("=", 1)[0]
