"""Glue between Hydra's job and the pipeline: settings, run context, errors.

torch, transformers, peft and mlflow are imported only once the config and the data have
validated, so a mistyped value or a faulty data file is answered in a second or two, not after
the libraries have loaded.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

if TYPE_CHECKING:
    from peftlab import pipeline
    from peftlab.shared import Shared

from peftlab import data, distributed, interrupts, names, sweep
from peftlab.errors import PeftlabError
from peftlab.schema import to_settings

log = logging.getLogger(__name__)

# Config groups whose choice names a run's model, data and method: tags, and compare's columns.
TAGGED_GROUPS = ("model", "dataset", "peft")


class FailedJob(CompactHydraException):
    """A sweep's job that ended on a :class:`PeftlabError`: Hydra marks the job failed, sweeps
    on, and ends the sweep printing this message alone (a traceback for any other exception)."""


def run_job(cfg: DictConfig, shared: Shared) -> float:
    """Run one job; returns held-out eval loss (what sweepers minimise). ``shared`` holds what
    the jobs of this process share (the base model, untuned measurements)."""
    hydra_cfg = HydraConfig.get()
    context = None
    try:
        with interrupts.interruptible():
            settings = to_settings(cfg)
            if hydra_cfg.mode == RunMode.RUN:  # a sweep's job records its data fault as FAILED
                data.check(settings.dataset)  # a data file's faults too, before torch loads
            from peftlab import console, pipeline  # heavy: only for a valid config and data

            console.quiet_libraries()
            distributed.join_slurm_job()
            if not distributed.is_first():  # a data-parallel job's other processes: no run
                return pipeline.train_alongside(settings, shared)
            context = run_context(hydra_cfg, cfg)
            result = pipeline.run(settings, context, shared)
    except PeftlabError as error:
        if hydra_cfg.mode == RunMode.RUN:
            raise SystemExit(f"error: {error}") from None
        raise FailedJob(f"error: {error}") from None  # the sweep's other jobs still run
    except interrupts.Interrupted as interrupt:
        from peftlab import console

        console.close_progress_bars()
        print(interrupted(interrupt, context), file=sys.stderr)
        interrupt.hand_on()  # submitit's requeue signal: it requeues the job, which resumes
        raise SystemExit(interrupt.exit_code) from None
    console.report(result)
    return result.eval_loss


def interrupted(interrupt: interrupts.Interrupted, context: pipeline.RunContext | None) -> str:
    """The one line an interrupted run ends with."""
    where = f" while {context.phase}" if context is not None else ""
    line = f"interrupted by {interrupt.signal_name}{where}"
    if context is None or context.run_id is None:
        return f"{line}: no run was started"
    from peftlab import training

    checkpoint = training.last_checkpoint(context.run_dir / names.TRAINER_DIR)
    if checkpoint is None:
        return (
            f"{line}: MLflow run {context.run_id} ended KILLED before its first checkpoint; "
            f"`peftlab rerun {context.run_id}` runs it again"
        )
    then = (
        "the requeued job continues it"
        if interrupt.requeues
        else f"`peftlab resume {context.run_id}` continues it"
    )
    return f"{line}: MLflow run {context.run_id} ended KILLED; last checkpoint {checkpoint}; {then}"


def run_context(hydra_cfg: DictConfig, cfg: DictConfig) -> pipeline.RunContext:
    from peftlab import pipeline, tracking

    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = hydra_cfg.runtime.choices
    tags = {group: choices.get(group) for group in TAGGED_GROUPS}
    tags[names.GIT_COMMIT_TAG] = tracking.git_commit(Path(hydra_cfg.runtime.cwd))
    run_name, sweep_tags, trial = None, {}, None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        run_name, sweep_tags = sweep.job_identity(hydra_cfg)
        trial = sweep.trial_of_job(hydra_cfg, cfg)
    return pipeline.RunContext(
        run_dir=run_dir,
        run_name=run_name,
        tags={key: str(value) for key, value in {**tags, **sweep_tags}.items() if value},
        config_dir=run_dir / hydra_cfg.output_subdir if hydra_cfg.output_subdir else None,
        trial=trial,
    )
