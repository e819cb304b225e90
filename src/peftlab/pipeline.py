"""One run of any PEFT method: untuned baseline, training, tuned evaluation, adapter, tracked."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf
from peft import PeftModel
from transformers import TrainingArguments, set_seed

from peftlab import (
    data,
    distributed,
    generation,
    interrupts,
    logged_model,
    modeling,
    names,
    scoring,
    tracking,
    training,
)
from peftlab.config import GenerationSettings
from peftlab.errors import PeftlabError
from peftlab.redaction import copy_redacted, redact_values
from peftlab.schema import TrainConfig

if TYPE_CHECKING:
    from peftlab.study import TrialLink

log = logging.getLogger(__name__)


@dataclass
class Sample:
    prompt: str
    untuned: str
    tuned: str


@dataclass(frozen=True)
class Baseline:
    """The untuned base model's held-out loss, samples and scored held-out generations."""

    eval_loss: float
    samples: tuple[str, ...]
    generations: scoring.Scores | None


# Jobs of a sweep over PEFT or trainer knobs share one untuned baseline: see untuned_baseline.
_baselines: dict[str, Baseline] = {}


@dataclass
class RunContext:
    """What the launcher knows about a run beyond its settings."""

    run_dir: Path
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    config_dir: Path | None = None  # Hydra's .hydra/ folder (config.yaml, overrides.yaml)
    # What the run is doing, and its MLflow id once it has one: what an interrupt reports.
    phase: str = "starting"
    run_id: str | None = None
    trial: TrialLink | None = None  # the Optuna trial a job of a search runs: its pruner


@dataclass
class RunResult:
    run_id: str
    eval_loss_untuned: float
    eval_loss: float
    samples: list[Sample]
    adapter_dir: Path
    ui_hint: str
    # Task data: each metric's score of the held-out generations, untuned and tuned.
    scores: dict[str, tuple[float, float]] = field(default_factory=dict)


def run(settings: TrainConfig, context: RunContext) -> RunResult:
    """One run; writes to the MLflow store are never cut in half by an interrupt (deferred)."""
    with interrupts.deferred():
        tracking.use_store(settings.tracking)
    if settings.resume is None:  # a job run again in its folder (a requeued Slurm job)
        settings = replace(settings, resume=unfinished_run(context.run_dir))
    name = settings.tracking.run_name or context.run_name
    tags = {**context.tags, **tracking.environment_tags(), **settings.tracking.tags}
    tags[names.RUN_DIR_TAG] = str(context.run_dir)
    with tracking.run(settings.tracking, name, tags, resume=settings.resume) as active:
        context.run_id = active.info.run_id
        context.run_dir.mkdir(parents=True, exist_ok=True)
        (context.run_dir / names.RUN_FILE).write_text(json.dumps({"run_id": context.run_id}))
        if settings.resume is None:  # a resumed run has all this already
            with interrupts.deferred():
                mlflow.log_params(redact_values(tracking.flatten(params(settings))))
                mlflow.log_text(tracking.installed_packages(), names.REQUIREMENTS_FILE)
                if context.config_dir is not None and context.config_dir.is_dir():
                    with tempfile.TemporaryDirectory() as staging:
                        copy = copy_redacted(context.config_dir, Path(staging, names.CONFIG_DIR))
                        mlflow.log_artifacts(str(copy), names.CONFIG_DIR)
        result = _train_and_log(settings, context)
        return RunResult(
            run_id=active.info.run_id, ui_hint=tracking.ui_hint(settings.tracking, active), **result
        )


def params(settings: TrainConfig) -> dict[str, Any]:
    """The settings as the run used them (a null learning rate as the method's own)."""
    return OmegaConf.to_container(OmegaConf.structured(settings), enum_to_str=True)


def _train_and_log(settings: TrainConfig, context: RunContext) -> dict[str, Any]:
    context.phase = "loading the model and data"
    examples = data.load_splits(settings.dataset)  # first: a data fault costs no model load
    loaded = modeling.load_shared(settings.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    splits = data.load_tokenized(settings.dataset, tokenizer)
    log.info("Data: %d train / %d held-out rows", len(splits.train), len(splits.eval))
    held_out = scoring.held_out(examples.eval, settings.dataset, settings.generation, tokenizer)
    if settings.resume is None:
        with interrupts.deferred():
            tracking.log_dataset(data.table(examples.train), settings.dataset, "training")
            tracking.log_dataset(data.table(examples.eval), settings.dataset, "evaluation")
            mlflow.log_metrics(
                {
                    names.DATASET_SKIPPED_LINES: examples.skipped_lines,
                    names.DATASET_DROPPED: splits.dropped,
                }
            )
    args = training.training_arguments(settings.trainer, context.run_dir / names.TRAINER_DIR)
    checkpoint = resume_checkpoint(settings, context)
    distributed.shared((context.run_dir, checkpoint))  # a data-parallel job's others: see below
    start_epoch = training.epoch_of(checkpoint)  # read now: training rotates checkpoints away

    context.phase = "measuring the untuned model"
    baseline = untuned_baseline(settings, loaded, splits, held_out, args)
    set_seed(settings.trainer.seed)  # adapter init and sampling repeat, whatever ran before
    # The base model is shared by the jobs of a sweep: it comes back unchanged from here.
    with settings.peft.attached(model, loaded.path) as peft_model:
        trainable, total = peft_model.get_nb_trainable_parameters()
        log.info("Trainable params: %d of %d (%.5f%%)", trainable, total, 100 * trainable / total)
        trainer = training.build_trainer(
            peft_model,
            tokenizer,
            args,
            splits.train,
            splits.eval,
            group_by_length=settings.trainer.group_by_length,
            early_stopping_patience=settings.trainer.early_stopping_patience,
            trial=context.trial,
        )
        context.phase = "training"
        # An interrupt ends training at a step's end with a checkpoint, then the run (KILLED).
        with interrupts.deferred():
            try:
                train_output = trainer.train(resume_from_checkpoint=checkpoint)
            except OSError as error:  # a full disk while writing a checkpoint, most likely
                raise PeftlabError(
                    f"training stopped on a file error in {args.output_dir}, where checkpoints "
                    f"are written ({error.strerror or error}); free some space, or set "
                    "trainer.save_strategy=no"
                ) from error
        context.phase = "evaluating"
        eval_loss = trainer.evaluate()[names.EVAL_LOSS]
        last_step = trainer.state.global_step
        tuned = tuned_samples(peft_model.eval(), tokenizer, settings.generation)
        if held_out is not None:
            context.phase = "generating from the held-out prompts"
            generations = scored_completions(
                peft_model.get_base_model(),
                tokenizer,
                held_out,
                settings.generation,
                generation.prefix(peft_model),
            )
        adapter_dir = save_adapter(peft_model, context.run_dir / names.ADAPTER_DIR)

    context.phase = "logging"
    prompts = settings.generation.prompts
    untuned = list(baseline.samples)
    samples = [Sample(p, u, t) for p, u, t in zip(prompts, untuned, tuned, strict=True)]
    runtime = train_output.metrics[names.TRAIN_RUNTIME]
    # The epochs this call trained: early stopping and a pruner end sooner than planned, and a
    # resumed run's runtime counts from its checkpoint.
    epochs = trainer.state.epoch - start_epoch
    trained_tokens = data.real_tokens(splits.train) * epochs
    metrics = {
        names.EVAL_LOSS: eval_loss,
        names.EVAL_LOSS_UNTUNED: baseline.eval_loss,
        names.EVAL_PERPLEXITY: math.exp(eval_loss),
        names.TRAINABLE_PARAMS: trainable,
        names.ADAPTER_BYTES: sum(f.stat().st_size for f in adapter_dir.iterdir()),
        names.TRAIN_RUNTIME: runtime,
        names.TRAIN_STEPS: last_step,
        names.TRAIN_TOKENS_PER_SECOND: trained_tokens / runtime,
    }
    if held_out is not None:
        metrics |= scoring.logged_metrics(baseline.generations, generations)
        table = scoring.table(held_out, baseline.generations, generations)
        (context.run_dir / names.GENERATIONS_TABLE).write_text(json.dumps(table, indent=2))
    # In the run's folder first: a store that went away costs the logging, not the results.
    (context.run_dir / names.SAMPLES_FILE).write_text(
        json.dumps([vars(s) for s in samples], indent=2)
    )
    (context.run_dir / names.METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    try:
        with interrupts.deferred():
            # At the last step: the run's eval_loss, after any curve's points.
            mlflow.log_metrics(metrics, step=last_step)
            if context.trial is not None and context.trial.pruned_step is not None:
                mlflow.set_tag(names.PRUNED_TAG, str(context.trial.pruned_step))
            mlflow.log_artifacts(str(adapter_dir), names.ADAPTER_DIR)
            logged_model.log(settings, adapter_dir, context.config_dir)
            mlflow.log_table(
                {"prompt": prompts, "untuned": untuned, "tuned": tuned},
                artifact_file=names.SAMPLES_FILE,
            )
            if held_out is not None:  # the UI's Evaluation view: runs' generations side by side
                mlflow.log_table(table, artifact_file=names.GENERATIONS_TABLE)
    except tracking.STORE_ERRORS as error:
        raise PeftlabError(
            f"could not log the results to {settings.tracking.uri} ({tracking.short(error)}); "
            f"the adapter, config, metrics and samples are in {context.run_dir}"
        ) from error
    return {
        names.EVAL_LOSS_UNTUNED: baseline.eval_loss,
        names.EVAL_LOSS: eval_loss,
        "samples": samples,
        "adapter_dir": adapter_dir,
        "scores": scoring.pairs(baseline.generations, generations) if held_out else {},
    }


def train_alongside(settings: TrainConfig) -> float:
    """Another process of a data-parallel job (see :mod:`peftlab.distributed`): trains its share
    of each batch with the first process, in the first's run folder and from its checkpoint;
    logs and writes nothing. Returns the held-out loss (the same in every process)."""
    loaded = modeling.load_shared(settings.model)
    splits = data.load_tokenized(settings.dataset, loaded.tokenizer)
    run_dir, checkpoint = distributed.shared()
    args = training.training_arguments(settings.trainer, run_dir / names.TRAINER_DIR)
    set_seed(settings.trainer.seed)
    with settings.peft.attached(loaded.model, loaded.path) as peft_model:
        trainer = training.build_trainer(
            peft_model,
            loaded.tokenizer,
            args,
            splits.train,
            splits.eval,
            group_by_length=settings.trainer.group_by_length,
            early_stopping_patience=settings.trainer.early_stopping_patience,
        )
        with interrupts.deferred():
            trainer.train(resume_from_checkpoint=checkpoint)
        return trainer.evaluate()[names.EVAL_LOSS]


def unfinished_run(run_dir: Path) -> str | None:
    """The MLflow run an earlier job in ``run_dir`` left unfinished with a checkpoint, if any."""
    try:
        run_id = json.loads((run_dir / names.RUN_FILE).read_text())["run_id"]
        status = mlflow.get_run(run_id).info.status
    except (OSError, ValueError, KeyError, MlflowException):
        return None
    if status == "FINISHED" or training.last_checkpoint(run_dir / names.TRAINER_DIR) is None:
        return None
    log.info("Found unfinished run %s (%s) in %s: resuming it", run_id, status, run_dir)
    return run_id


def resume_checkpoint(settings: TrainConfig, context: RunContext) -> str | None:
    """The checkpoint a resumed run continues from (None for a new run)."""
    if settings.resume is None:
        return None
    found = training.last_checkpoint(context.run_dir / names.TRAINER_DIR)
    if found is None:
        raise PeftlabError(
            f"resume={settings.resume}: no checkpoint in {context.run_dir / 'trainer'}; "
            f"`peftlab rerun {settings.resume}` trains it again"
        )
    log.info("Resuming run %s from %s", settings.resume, found)
    return str(found)


def tuned_samples(peft_model: PeftModel, tokenizer, settings: GenerationSettings) -> list[str]:
    """The probe prompts' continuations through the active adapter."""
    base = peft_model.get_base_model()
    return [
        generation.generate(base, tokenizer, prompt, settings, generation.prefix(peft_model))
        for prompt in settings.prompts
    ]


def scored_completions(
    model,
    tokenizer,
    held_out: scoring.HeldOut,
    settings: GenerationSettings,
    before: generation.PrefixFor,
) -> scoring.Scores:
    """The held-out prompts completed by ``model`` (with an adapter's prefix ``before``),
    scored against their references."""
    prompts = list(held_out.prompts)
    completions = generation.complete(model, tokenizer, prompts, settings, before)
    return scoring.score(completions, held_out.references, settings.metrics)


def untuned_baseline(
    settings: TrainConfig,
    loaded: modeling.LoadedModel,
    splits: data.Tokenized,
    held_out: scoring.HeldOut | None,
    args: TrainingArguments,
) -> Baseline:
    """Held-out loss, samples and generations of the base model, computed once per process for
    each model, data, generation and evaluation setting: the jobs of a sweep over PEFT knobs
    share them."""
    trainer = settings.trainer
    evaluation = (trainer.per_device_eval_batch_size, training.use_bf16(trainer.precision))
    key = repr((settings.model, settings.dataset, settings.generation, evaluation, trainer.seed))
    if key not in _baselines:
        model, tokenizer = loaded.model, loaded.tokenizer
        set_seed(trainer.seed)  # sampled generations repeat, so a cached baseline equals a new one
        eval_loss = training.evaluate_loss(model, tokenizer, args, splits.eval)
        samples = tuple(
            generation.generate(model, tokenizer, prompt, settings.generation)
            for prompt in settings.generation.prompts
        )
        generations = None
        if held_out is not None:
            generations = scored_completions(
                model, tokenizer, held_out, settings.generation, generation.no_prefix
            )
        _baselines[key] = Baseline(eval_loss, samples, generations)
    return _baselines[key]


def save_adapter(peft_model: PeftModel, target: Path) -> Path:
    """Save as safetensors under ``target``, renamed into place only once complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".adapter-partial-"))
    try:
        # A pad row added to the embeddings is never trained: the adapter stays adapter-sized.
        peft_model.save_pretrained(staging, safe_serialization=True, save_embedding_layers=False)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except OSError as error:  # a full or failing disk: the half-written copy goes with staging
        raise PeftlabError(
            f"could not save the adapter to {target}: {error.strerror or error}; nothing "
            "half-written was kept: free some space and run again"
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
