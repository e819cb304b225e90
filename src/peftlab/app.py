"""Glue between Hydra's job and the pipeline: settings, run context, errors."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from peftlab import console, pipeline, sweep, tracking
from peftlab.config import to_settings
from peftlab.errors import PeftlabError

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> float:
    """Run one job; returns held-out eval loss (what sweepers minimise)."""
    console.quiet_libraries()
    hydra_cfg = HydraConfig.get()
    try:
        settings = to_settings(cfg)
        result = pipeline.run(settings, run_context(cfg, hydra_cfg))
    except PeftlabError as error:
        if hydra_cfg.mode == RunMode.RUN:
            raise SystemExit(f"error: {error}") from None
        raise
    console.report(result)
    return result.eval_loss


def run_context(cfg: DictConfig, hydra_cfg: DictConfig) -> pipeline.RunContext:
    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = hydra_cfg.runtime.choices
    tags = {"model": choices.get("model"), "dataset": choices.get("dataset")}
    tags["git_commit"] = tracking.git_commit(Path(hydra_cfg.runtime.cwd))
    run_name, sweep_tags = None, {}
    if hydra_cfg.mode == RunMode.MULTIRUN:
        run_name, sweep_tags = sweep.job_identity(hydra_cfg)
    return pipeline.RunContext(
        run_dir=run_dir,
        params=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        run_name=run_name,
        tags={key: str(value) for key, value in {**tags, **sweep_tags}.items() if value},
        config_dir=run_dir / hydra_cfg.output_subdir if hydra_cfg.output_subdir else None,
    )
