"""Glue between Hydra's job and the pipeline: settings, run context, errors.

torch, transformers, peft and mlflow are imported only once the config has validated, so a
mistyped value is answered in a second or two, not after the libraries have loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

if TYPE_CHECKING:
    from peftlab import pipeline

from peftlab import sweep
from peftlab.config import to_settings
from peftlab.errors import PeftlabError

log = logging.getLogger(__name__)

# Config groups whose choice names a run's model, data and method: tags, and compare's columns.
TAGGED_GROUPS = ("model", "dataset", "peft")


def run_job(cfg: DictConfig) -> float:
    """Run one job; returns held-out eval loss (what sweepers minimise)."""
    hydra_cfg = HydraConfig.get()
    try:
        settings = to_settings(cfg)
        from peftlab import console, pipeline  # heavy: only for a valid config

        console.quiet_libraries()
        result = pipeline.run(settings, run_context(hydra_cfg))
    except PeftlabError as error:
        if hydra_cfg.mode == RunMode.RUN:
            raise SystemExit(f"error: {error}") from None
        raise
    console.report(result)
    return result.eval_loss


def run_context(hydra_cfg: DictConfig) -> pipeline.RunContext:
    from peftlab import pipeline, tracking

    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = hydra_cfg.runtime.choices
    tags = {group: choices.get(group) for group in TAGGED_GROUPS}
    tags["git_commit"] = tracking.git_commit(Path(hydra_cfg.runtime.cwd))
    run_name, sweep_tags = None, {}
    if hydra_cfg.mode == RunMode.MULTIRUN:
        run_name, sweep_tags = sweep.job_identity(hydra_cfg)
    return pipeline.RunContext(
        run_dir=run_dir,
        run_name=run_name,
        tags={key: str(value) for key, value in {**tags, **sweep_tags}.items() if value},
        config_dir=run_dir / hydra_cfg.output_subdir if hydra_cfg.output_subdir else None,
    )
