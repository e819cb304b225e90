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
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments, set_seed

from peftlab import (
    data,
    distributed,
    generation,
    interrupts,
    logged_model,
    memory,
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
from peftlab.shared import Shared

if TYPE_CHECKING:
    from datasets import Dataset

    from peftlab.study import TrialLink

log = logging.getLogger(__name__)


@dataclass
class Sample:
    prompt: str
    untuned: str
    tuned: str


@dataclass(frozen=True)
class Baseline:
    """The untuned base model's held-out loss, samples and scored held-out generations, and its
    loss on the general text (None: not measured)."""

    eval_loss: float
    samples: tuple[str, ...]
    generations: scoring.Scores | None
    general_loss: float | None = None


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
    # How long a tracking server that does not answer is waited for (a sweep's job: longer).
    patience: tracking.Patience = tracking.AT_ONCE


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


def run(settings: TrainConfig, context: RunContext, shared: Shared) -> RunResult:
    """One run, in the order it happens; writes to the MLflow store are never cut in half by an
    interrupt (deferred)."""
    with interrupts.deferred():
        tracking.use_store(settings.tracking, context.patience)
    if settings.resume is None:  # a job run again in its folder (a requeued Slurm job)
        settings = replace(settings, resume=unfinished_run(context.run_dir, settings))
    name = settings.tracking.run_name or context.run_name
    with tracking.run(
        settings.tracking, name, run_tags(settings, context), settings.resume
    ) as active:
        context.run_id = active.info.run_id
        if context.trial is not None:
            context.trial.record_run(context.run_id)
        record_start(settings, context)
        inputs = load(settings, context, shared)
        plan = plan_training(settings, context)
        context.phase = "measuring the untuned model"
        baseline = measure_untuned(settings, inputs, plan.args, shared)
        tuned = attach_and_train(settings, context, inputs, plan)
        context.phase = "logging"
        ui_hint = tracking.ui_hint(settings.tracking, active)
        return log_results(settings, context, inputs, baseline, tuned, ui_hint)


def run_tags(settings: TrainConfig, context: RunContext) -> dict[str, str]:
    tags = {**context.tags, **tracking.environment_tags(), **settings.tracking.tags}
    return tags | {names.RUN_DIR_TAG: str(context.run_dir)}


def record_start(settings: TrainConfig, context: RunContext) -> None:
    """The run's id in its folder (a job run again there continues it); for a new run, its
    settings, installed packages and Hydra config (passwords masked) in MLflow."""
    context.run_dir.mkdir(parents=True, exist_ok=True)
    (context.run_dir / names.RUN_FILE).write_text(json.dumps({"run_id": context.run_id}))
    if settings.resume is not None:  # a resumed run has all this already
        return
    with interrupts.deferred():
        mlflow.log_params(logged_params(settings))
        mlflow.log_text(tracking.installed_packages(), names.REQUIREMENTS_FILE)
        if context.config_dir is not None and context.config_dir.is_dir():
            with tempfile.TemporaryDirectory() as staging:
                copy = copy_redacted(context.config_dir, Path(staging, names.CONFIG_DIR))
                mlflow.log_artifacts(str(copy), names.CONFIG_DIR)


def logged_params(settings: TrainConfig) -> dict[str, str]:
    """The settings as a run logs them: dotted keys, values as text, passwords masked."""
    return redact_values(tracking.flatten(params(settings)))


def params(settings: TrainConfig) -> dict[str, Any]:
    """The settings as the run used them (a null learning rate as the method's own)."""
    return OmegaConf.to_container(OmegaConf.structured(settings), enum_to_str=True)


@dataclass(frozen=True)
class Inputs:
    """What a run reads: its rows as examples, the base model, the rows tokenized, for task
    data the held-out prompts and references generations are scored on, and the general text
    tokenized (None: forgetting is not measured)."""

    examples: data.Splits
    model: modeling.LoadedModel
    splits: data.Tokenized
    held_out: scoring.HeldOut | None
    general: Dataset | None


def load(settings: TrainConfig, context: RunContext, shared: Shared) -> Inputs:
    context.phase = "loading the model and data"
    examples = data.load_splits(settings.dataset)  # first: a data fault costs no model load
    loaded = shared.model(settings.model)
    splits = data.load_tokenized(settings.dataset, loaded.tokenizer)
    log.info("Data: %d train / %d held-out rows", len(splits.train), len(splits.eval))
    held_out = scoring.held_out(
        examples.eval, settings.dataset, settings.generation, loaded.tokenizer
    )
    general = data.load_general(
        settings.generation.general_data_files, loaded.tokenizer, settings.dataset.max_length
    )
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
    return Inputs(examples, loaded, splits, held_out, general)


@dataclass(frozen=True)
class TrainingPlan:
    args: TrainingArguments
    checkpoint: str | None  # a resumed run's: where training continues
    start_epoch: float  # the checkpoint's epoch (0 for a new run)


def plan_training(settings: TrainConfig, context: RunContext) -> TrainingPlan:
    args = training.training_arguments(settings.trainer, context.run_dir / names.TRAINER_DIR)
    checkpoint = resume_checkpoint(settings, context)
    distributed.shared((context.run_dir, checkpoint))  # a data-parallel job's others: see below
    # Read now: training rotates checkpoints away.
    return TrainingPlan(args, checkpoint, training.epoch_of(checkpoint))


@dataclass(frozen=True)
class Tuned:
    """What training made and how the tuned model measured."""

    eval_loss: float
    steps: int  # the last optimizer step
    tokens: int  # real (non-pad) tokens trained up to it
    epochs: float  # trained by this call: early stopping and pruning end sooner than planned
    runtime_s: float  # of this call: a resumed run's counts from its checkpoint
    peak_memory_bytes: int  # of this call's training
    trainable_params: int
    samples: list[str]
    generations: scoring.Scores | None
    general_loss: float | None  # None: not measured
    adapter_dir: Path


def attach_and_train(
    settings: TrainConfig, context: RunContext, inputs: Inputs, plan: TrainingPlan
) -> Tuned:
    """Train a fresh adapter on the shared base model, measure it, save it; the base model comes
    back unchanged from here."""
    set_seed(settings.trainer.seed)  # adapter init and sampling repeat, whatever ran before
    with settings.peft.attached(inputs.model.model, inputs.model.path) as peft_model:
        trainable, total = peft_model.get_nb_trainable_parameters()
        log.info("Trainable params: %d of %d (%.5f%%)", trainable, total, 100 * trainable / total)
        tokenizer, splits = inputs.model.tokenizer, inputs.splits
        trainer = new_trainer(settings, peft_model, tokenizer, splits, plan.args, context.trial)
        context.phase = "training"
        with memory.peak() as peak:
            runtime = fit(trainer, plan)
        context.phase = "evaluating"
        eval_loss = trainer.evaluate()[names.EVAL_LOSS]
        samples = tuned_samples(peft_model.eval(), inputs.model.tokenizer, settings.generation)
        generations = None
        if inputs.held_out is not None:
            context.phase = "generating from the held-out prompts"
            generations = scored_completions(
                peft_model.get_base_model(),
                inputs.model.tokenizer,
                inputs.held_out,
                settings.generation,
                generation.prefix(peft_model),
            )
        # Last: a new Trainer reseeds, which would change what sampled generations come before.
        general_loss = general_text_loss(peft_model, inputs, plan.args)
        adapter_dir = save_adapter(peft_model, context.run_dir / names.ADAPTER_DIR)
    state = trainer.state
    return Tuned(
        eval_loss, state.global_step, state.num_input_tokens_seen, state.epoch - plan.start_epoch,
        runtime, peak.bytes, trainable, samples, generations, general_loss, adapter_dir,
    )  # fmt: skip


def new_trainer(
    settings: TrainConfig,
    peft_model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    splits: data.Tokenized,
    args: TrainingArguments,
    trial: TrialLink | None = None,
) -> Trainer:
    """The Trainer of a run, the same in every process of a data-parallel job."""
    trainer = training.build_trainer(
        peft_model,
        tokenizer,
        args,
        splits.train,
        splits.eval,
        group_by_length=settings.trainer.group_by_length,
        early_stopping_patience=settings.trainer.early_stopping_patience,
        trial=trial,
        eval_subset_rows=settings.trainer.eval_subset_rows,
    )
    for callback in settings.peft.trainer_callbacks(peft_model):
        trainer.add_callback(callback)
    return trainer


def fit(trainer: Trainer, plan: TrainingPlan) -> float:
    """Train (from the plan's checkpoint, if any); returns the seconds it took. An interrupt
    ends training at a step's end with a checkpoint, then the run (KILLED)."""
    with interrupts.deferred():
        try:
            output = trainer.train(resume_from_checkpoint=plan.checkpoint)
        except OSError as error:  # a full disk while writing a checkpoint, most likely
            raise PeftlabError(
                f"training stopped on a file error in {plan.args.output_dir}, where checkpoints "
                f"are written ({error.strerror or error}); free some space, or set "
                "trainer.save_strategy=no"
            ) from error
    return output.metrics[names.TRAIN_RUNTIME]


def log_results(
    settings: TrainConfig,
    context: RunContext,
    inputs: Inputs,
    baseline: Baseline,
    tuned: Tuned,
    ui_hint: str,
) -> RunResult:
    """The run's metrics, samples and generations in its folder first (a store that went away
    costs the logging, not the results), then in MLflow with the adapter and the model."""
    prompts = settings.generation.prompts
    samples = [Sample(*s) for s in zip(prompts, baseline.samples, tuned.samples, strict=True)]
    metrics = run_metrics(inputs, baseline, tuned)
    if context.trial is not None:  # what the trial spent of its search's budget
        metrics |= {names.SEARCH_STEPS: tuned.steps, names.SEARCH_TOKENS: tuned.tokens}
    table = None
    if inputs.held_out is not None:
        metrics |= scoring.logged_metrics(baseline.generations, tuned.generations)
        table = scoring.table(inputs.held_out, baseline.generations, tuned.generations)
        write_json(context.run_dir / names.GENERATIONS_TABLE, table)
    write_json(context.run_dir / names.SAMPLES_FILE, [vars(s) for s in samples])
    write_json(context.run_dir / names.METRICS_FILE, metrics)
    try:
        with interrupts.deferred():
            log_to_store(settings, context, metrics, samples, tuned, table)
    except tracking.STORE_ERRORS as error:
        raise PeftlabError(
            f"could not log the results to {settings.tracking.uri} ({tracking.short(error)}); "
            f"the adapter, config, metrics and samples are in {context.run_dir}"
        ) from error
    scores = scoring.pairs(baseline.generations, tuned.generations) if table else {}
    return RunResult(
        run_id=context.run_id,
        eval_loss_untuned=baseline.eval_loss,
        eval_loss=tuned.eval_loss,
        samples=samples,
        adapter_dir=tuned.adapter_dir,
        ui_hint=ui_hint,
        scores=scores,
    )


def run_metrics(inputs: Inputs, baseline: Baseline, tuned: Tuned) -> dict[str, float]:
    trained_tokens = data.real_tokens(inputs.splits.train) * tuned.epochs
    metrics = {
        names.EVAL_LOSS: tuned.eval_loss,
        names.EVAL_LOSS_UNTUNED: baseline.eval_loss,
        names.EVAL_PERPLEXITY: math.exp(tuned.eval_loss),
        names.TRAINABLE_PARAMS: tuned.trainable_params,
        names.ADAPTER_BYTES: sum(f.stat().st_size for f in tuned.adapter_dir.iterdir()),
        names.TRAIN_RUNTIME: tuned.runtime_s,
        names.PEAK_MEMORY_BYTES: tuned.peak_memory_bytes,
        names.TRAIN_STEPS: tuned.steps,
        names.TRAIN_TOKENS_PER_SECOND: trained_tokens / tuned.runtime_s,
    }
    if tuned.general_loss is not None:  # what tuning cost the model on general text
        metrics[names.EVAL_FORGETTING] = tuned.general_loss - baseline.general_loss
    return metrics


def log_to_store(
    settings: TrainConfig,
    context: RunContext,
    metrics: dict[str, float],
    samples: list[Sample],
    tuned: Tuned,
    table: dict[str, list] | None,
) -> None:
    mlflow.log_metrics(metrics, step=tuned.steps)  # at the last step: after any curve's points
    if context.trial is not None and context.trial.pruned_step is not None:
        mlflow.set_tag(names.PRUNED_TAG, str(context.trial.pruned_step))
    mlflow.log_artifacts(str(tuned.adapter_dir), names.ADAPTER_DIR)
    logged_model.log(settings, tuned.adapter_dir, context.config_dir)
    columns = {"prompt": [s.prompt for s in samples], "untuned": [s.untuned for s in samples]}
    mlflow.log_table(columns | {"tuned": tuned.samples}, artifact_file=names.SAMPLES_FILE)
    if table is not None:  # the UI's Evaluation view: runs' generations side by side
        mlflow.log_table(table, artifact_file=names.GENERATIONS_TABLE)


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2))


def train_alongside(settings: TrainConfig, shared: Shared) -> float:
    """Another process of a data-parallel job (see :mod:`peftlab.distributed`): trains its share
    of each batch with the first process, in the first's run folder and from its checkpoint;
    logs and writes nothing. Returns the held-out loss (the same in every process)."""
    loaded = shared.model(settings.model)
    splits = data.load_tokenized(settings.dataset, loaded.tokenizer)
    run_dir, checkpoint = distributed.shared()
    args = training.training_arguments(settings.trainer, run_dir / names.TRAINER_DIR)
    set_seed(settings.trainer.seed)
    with settings.peft.attached(loaded.model, loaded.path) as peft_model:
        trainer = new_trainer(settings, peft_model, loaded.tokenizer, splits, args)
        fit(trainer, TrainingPlan(args, checkpoint, training.epoch_of(checkpoint)))
        return trainer.evaluate()[names.EVAL_LOSS]


def unfinished_run(run_dir: Path, settings: TrainConfig) -> str | None:
    """The MLflow run an earlier job in ``run_dir`` left unfinished with a checkpoint, if it ran
    these settings (a sweep started again into the same folder with other values starts anew)."""
    try:
        run_id = json.loads((run_dir / names.RUN_FILE).read_text())["run_id"]
        run = mlflow.get_run(run_id)
    except (OSError, ValueError, KeyError, MlflowException):
        return None
    status = run.info.status
    if status == "FINISHED" or training.last_checkpoint(run_dir / names.TRAINER_DIR) is None:
        return None
    if changed := changed_params(run.data.params, settings):
        log.warning(
            "The unfinished run %s in %s ran other settings (%s): starting a new run",
            run_id, run_dir, changed,
        )  # fmt: skip
        return None
    log.info("Found unfinished run %s (%s) in %s: resuming it", run_id, status, run_dir)
    return run_id


def changed_params(logged: dict[str, str], settings: TrainConfig) -> str:
    """The keys ``settings`` set otherwise than a run logged them, ``key: was -> now``."""
    now = logged_params(settings)
    changed = [key for key in sorted(now) if key in logged and logged[key] != now[key]]
    return ", ".join(f"{key}: {logged[key]} -> {now[key]}" for key in changed)


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


def measure_untuned(
    settings: TrainConfig, inputs: Inputs, args: TrainingArguments, shared: Shared
) -> Baseline:
    """Held-out loss, samples and generations of the base model, measured once per process for
    each model, data, generation and evaluation setting: the jobs of a sweep over PEFT knobs
    share them; and its loss on the general text, once for each model, text and max_length."""
    trainer, model = settings.trainer, inputs.model.model
    evaluation = (trainer.per_device_eval_batch_size, training.use_bf16(trainer.precision))
    key = repr((settings.model, settings.dataset, settings.generation, evaluation, trainer.seed))
    baseline = shared.measured(key, lambda: _measure_untuned(settings, inputs, args))
    # Fewer settings than the rest: the jobs of a sweep over the data share it too.
    general = (settings.generation.general_data_files, settings.dataset.max_length)
    key = repr((settings.model, general, evaluation))
    general_loss = shared.measured(key, lambda: general_text_loss(model, inputs, args))
    return replace(baseline, general_loss=general_loss)


def general_text_loss(model, inputs: Inputs, args: TrainingArguments) -> float | None:
    """``model``'s loss on the general text, token-weighted as the held-out loss is (None where
    no general text is set)."""
    if inputs.general is None:
        return None
    return training.evaluate_loss(model, inputs.model.tokenizer, args, inputs.general)


def _measure_untuned(settings: TrainConfig, inputs: Inputs, args: TrainingArguments) -> Baseline:
    model, tokenizer = inputs.model.model, inputs.model.tokenizer
    set_seed(
        settings.trainer.seed
    )  # sampled generations repeat: a shared baseline equals a new one
    eval_loss = training.evaluate_loss(model, tokenizer, args, inputs.splits.eval)
    samples = tuple(
        generation.generate(model, tokenizer, prompt, settings.generation)
        for prompt in settings.generation.prompts
    )
    generations = None
    if inputs.held_out is not None:
        generations = scored_completions(
            model, tokenizer, inputs.held_out, settings.generation, generation.no_prefix
        )
    return Baseline(eval_loss, samples, generations)


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
