"""Glue between Hydra's job and the pipeline: settings, run context, errors.

torch, transformers, peft and mlflow are imported only once the config and the data have
validated, so a mistyped value or a faulty data file is answered in a second or two, not after
the libraries have loaded.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

if TYPE_CHECKING:
    from peftlab import pipeline
    from peftlab.shared import Shared

from peftlab import data, distributed, imports, interrupts, names, sweep
from peftlab.errors import PeftlabError
from peftlab.schema import TrainConfig, to_settings

log = logging.getLogger(__name__)

# Config groups whose choice names a run's model, data and method: tags, and compare's columns.
TAGGED_GROUPS = ("model", "dataset", "peft")


class FailedJob(CompactHydraException):
    """A sweep's job that ended on a :class:`PeftlabError`: Hydra marks the job failed, sweeps
    on, and ends the sweep printing this message alone (a traceback for any other exception)."""


class NotRequeued(CompactHydraException):
    """A job interrupted by its launcher's requeue signal that the launcher did not requeue
    (submitit: timed out more than ``max_num_timeout`` times). Like :class:`FailedJob`, the
    sweep ends printing its line: the run that ended KILLED, and how to continue it."""


def run_job(cfg: DictConfig, shared: Shared) -> float:
    """Run one job; returns held-out eval loss (what sweepers minimise). ``shared`` holds what
    the jobs of this process share (the base model, untuned measurements)."""
    hydra_cfg = HydraConfig.get()
    context = None
    try:
        with interrupts.interruptible():
            settings = to_settings(cfg)
            with imports.heavy():  # mlflow (in check_inputs), then torch, transformers, peft
                if hydra_cfg.mode == RunMode.RUN:  # a sweep's job records these as FAILED
                    check_inputs(settings)
                from peftlab import console, pipeline  # only for valid inputs

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
        end_interrupted(interrupt, context)
    console.report(result)
    return result.eval_loss


def check_inputs(settings: TrainConfig) -> None:
    """A run's data files and tracking store, checked before torch, transformers and peft load
    (seconds): a fault in either is one line at once."""
    data.check(settings.dataset)
    from peftlab import tracking  # MLflow loads in a second: once the data is found sound

    tracking.require_reachable(settings.tracking.uri)  # use_store's check, done before it


REQUEUED = "requeued"


def end_interrupted(
    interrupt: interrupts.Interrupted, context: pipeline.RunContext | None
) -> NoReturn:
    """The run has ended KILLED by now (tracking.run). The signal goes on to the launcher's
    handler that waits for it (submitit's), then one line says what that handler did: only it
    knows whether it requeues the job (not past ``max_num_timeout`` time limits)."""
    try:
        interrupt.hand_on()
    except SystemExit:  # submitit requeued the job, and exits
        print(interrupted(interrupt, context, REQUEUED), file=sys.stderr)
        raise
    except Exception as refused:  # submitit's UncompletedJobError: the job ends here
        line = interrupted(interrupt, context, f"not requeued ({reason(refused)})")
        print(line, file=sys.stderr)  # the job's log
        # Hydra's job returns it, through submitit, to the sweep: the line the sweep ends on.
        raise NotRequeued(line) from refused
    print(interrupted(interrupt, context), file=sys.stderr)  # no handler, or one that returned
    raise SystemExit(interrupt.exit_code) from None


def reason(refused: Exception) -> str:
    """Why the launcher did not requeue, without submitit's preamble."""
    return str(refused).removeprefix("Job not requeued because: ").rstrip(".") or repr(refused)


def interrupted(
    interrupt: interrupts.Interrupted,
    context: pipeline.RunContext | None,
    outcome: str | None = None,
) -> str:
    """The one line an interrupted run ends with; ``outcome``: what the launcher did with the
    job (:data:`REQUEUED`, or ``not requeued (why)``), None where no launcher had a say."""
    where = f" while {context.phase}" if context is not None else ""
    line = f"interrupted by {interrupt.signal_name}{where}"
    if context is None or context.run_id is None:
        return f"{line}: no run was started" + (f"; {outcome}" if outcome else "")
    from peftlab import training

    checkpoint = training.last_checkpoint(context.run_dir / names.TRAINER_DIR)
    ended = f"MLflow run {context.run_id} ended KILLED" + (
        f"; last checkpoint {checkpoint}" if checkpoint else " before its first checkpoint"
    )
    return f"{line}: {ended}; {what_continues(context.run_id, checkpoint is not None, outcome)}"


def what_continues(run_id: str, checkpointed: bool, outcome: str | None) -> str:
    """The requeued job, or the user's command. Without a checkpoint either starts the run
    again as a new run (a job run again passes such a run over: pipeline.unfinished_run)."""
    if outcome == REQUEUED:
        return f"the requeued job {'continues it' if checkpointed else 'runs it again'}"
    if checkpointed:
        command = f"`peftlab resume {run_id}` continues it"
    else:
        command = f"`peftlab rerun {run_id}` runs it again"
    return f"{outcome}; {command}" if outcome else command


def run_context(hydra_cfg: DictConfig, cfg: DictConfig) -> pipeline.RunContext:
    from peftlab import pipeline, tracking

    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = hydra_cfg.runtime.choices
    tags = {group: choices.get(group) for group in TAGGED_GROUPS}
    tags[names.GIT_COMMIT_TAG] = tracking.git_commit(Path(hydra_cfg.runtime.cwd))
    run_name, sweep_tags, trial, patience = None, {}, None, tracking.AT_ONCE
    if hydra_cfg.mode == RunMode.MULTIRUN:  # unattended: a server restart costs no job
        run_name, sweep_tags = sweep.job_identity(hydra_cfg)
        trial, patience = sweep.trial_of_job(hydra_cfg, cfg), tracking.IN_A_SWEEP
    return pipeline.RunContext(
        run_dir=run_dir,
        run_name=run_name,
        tags={key: str(value) for key, value in {**tags, **sweep_tags}.items() if value},
        config_dir=run_dir / hydra_cfg.output_subdir if hydra_cfg.output_subdir else None,
        trial=trial,
        patience=patience,
    )
