"""Glue between Hydra's job and the pipeline: settings, run context, errors, console report."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import datasets
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from transformers.utils import logging as hf_logging

from peftlab import pipeline, tracking
from peftlab.config import to_settings
from peftlab.errors import PeftlabError

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> float:
    """Run one job; returns held-out eval loss (what sweepers minimise)."""
    quiet_libraries()
    hydra_cfg = HydraConfig.get()
    try:
        settings = to_settings(cfg)
        result = pipeline.run(settings, run_context(cfg, hydra_cfg))
    except PeftlabError as error:
        if hydra_cfg.mode == RunMode.RUN:
            raise SystemExit(f"error: {error}") from None
        raise
    report(result)
    return result.eval_loss


def run_context(cfg: DictConfig, hydra_cfg: DictConfig) -> pipeline.RunContext:
    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = hydra_cfg.runtime.choices
    tags = {"model": choices.get("model"), "dataset": choices.get("dataset")}
    commit = tracking.git_commit(Path(hydra_cfg.runtime.cwd))
    if commit:
        tags["git_commit"] = commit
    return pipeline.RunContext(
        run_dir=run_dir,
        params=OmegaConf.to_container(cfg, resolve=True),
        tags={key: str(value) for key, value in tags.items() if value is not None},
        config_dir=run_dir / hydra_cfg.output_subdir if hydra_cfg.output_subdir else None,
    )


def quiet_libraries() -> None:
    """Keep the console to peftlab's own progress: libraries speak only on errors."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    for name in ("alembic", "mlflow", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def report(result: pipeline.RunResult) -> None:
    untuned, tuned = result.eval_loss_untuned, result.eval_loss
    lines = [f"Held-out eval loss: untuned {untuned:.4f} -> tuned {tuned:.4f}"]
    for sample in result.samples:
        lines += [
            f"Prompt:  {sample.prompt}",
            f"  untuned: {sample.untuned}",
            f"  tuned:   {sample.tuned}",
        ]
    lines += [
        f"Adapter: {result.adapter_dir}",
        f"MLflow run {result.run_id}: {result.ui_hint}",
    ]
    print("\n".join(lines), file=sys.stdout, flush=True)
