"""Hugging Face Trainer set up for PEFT: arguments, precision, curves, length grouping, a
token-weighted held-out loss, early stopping."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import torch
from datasets import Dataset
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, Sampler
from transformers import (
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, EvalLoopOutput

from peftlab import distributed, interrupts, names, tracking
from peftlab.config import Precision, TrainerConfig

if TYPE_CHECKING:
    from peftlab.study import TrialLink

log = logging.getLogger(__name__)


@cache
def native_bf16() -> bool:
    """Whether bf16 runs in hardware here; emulated bf16 is slower than fp32."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return cpu_has_bf16(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def cpu_has_bf16(cpuinfo: str) -> bool:
    """Whether a CPU (its /proc/cpuinfo) computes bf16 in hardware: AVX512-BF16 or AMX."""
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags")
             for flag in line.split(":", 1)[1].split()}  # fmt: skip
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def use_bf16(precision: Precision) -> bool:
    return precision == Precision.bf16 or (precision == Precision.auto and native_bf16())


def training_arguments(cfg: TrainerConfig, output_dir: Path) -> TrainingArguments:
    stopping = cfg.early_stopping_patience is not None
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=cfg.num_train_epochs,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=use_bf16(cfg.precision),
        use_cpu=not torch.cuda.is_available(),
        eval_strategy=cfg.eval_strategy,
        eval_steps=cfg.eval_steps,
        # Early stopping ends on the best evaluated adapter, restored from its checkpoint.
        save_strategy=cfg.eval_strategy if stopping else cfg.save_strategy,
        save_steps=cfg.eval_steps if stopping else cfg.save_steps,
        save_total_limit=1,
        load_best_model_at_end=stopping,
        metric_for_best_model=names.EVAL_LOSS if stopping else None,
        # Evaluation only needs the loss; gathering every batch's logits costs time and memory.
        prediction_loss_only=True,
        # The real (non-pad) tokens trained, exactly: a search's budget (search_tokens).
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=False,
        label_names=["labels"],
    )


# What the Trainer logs at each logging step, and the curve each becomes in MLflow.
CURVES = {
    "loss": names.TRAIN_LOSS,
    "learning_rate": names.LEARNING_RATE,
    "grad_norm": names.GRAD_NORM,
}


class DuringTraining(TrainerCallback):
    """Knows whether the Trainer is training: evaluations outside ``train()`` (the untuned
    baseline, the final one) are no part of the training's curve or its trial's reports."""

    training = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False


class MlflowCurvesCallback(DuringTraining):
    """Logs the training loss, learning rate and gradient norm at every logging step, and the
    held-out loss at every evaluation during training, to the active MLflow run (curves).

    Evaluations outside training (the untuned baseline, the final one) are the caller's to log.
    A store that stops answering costs the curves, not the training: they stay in the
    checkpoints' ``trainer_state.json``.
    """

    def __init__(self) -> None:
        self.store_lost = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Without an active run, mlflow.log_metric would start one (and a store) on its own.
        if not logs or mlflow.active_run() is None:
            return
        curves = {name: float(logs[key]) for key, name in CURVES.items() if key in logs}
        if names.TRAIN_LOSS in curves:  # not the end-of-training summary, which has no "loss"
            self._log(curves, state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.training and metrics and mlflow.active_run() is not None:
            self._log({names.EVAL_LOSS: metrics[names.EVAL_LOSS]}, state.global_step)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.store_lost:
            return
        try:
            with interrupts.deferred():
                mlflow.log_metrics(metrics, step=step)
        except tracking.STORE_ERRORS as error:
            self.store_lost = True
            log.warning("MLflow store unreachable, training goes on: %s", tracking.short(error))


class ReportToTrial(DuringTraining):
    """Each held-out evaluation during training goes to the search's Optuna trial, whose pruner
    may end the training there (the run then ends as usual, tagged ``pruned``)."""

    def __init__(self, trial: TrialLink) -> None:
        self.trial = trial

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not (self.training and metrics and names.EVAL_LOSS in metrics):
            return
        if self.trial.report(metrics[names.EVAL_LOSS], state.global_step):
            log.info(
                "Pruned at step %d (eval_loss %.4f)", state.global_step, metrics[names.EVAL_LOSS]
            )
            control.should_training_stop = True


class CheckpointOnInterrupt(TrainerCallback):
    """An interrupt held back during training (see :func:`peftlab.interrupts.deferred`) ends it
    at the next step's end, with a checkpoint of that step to resume from; in every process of
    a data-parallel job at the same step, whichever got the signal first."""

    def on_step_end(self, args, state, control, **kwargs):
        if distributed.anyone(interrupts.pending()):
            control.should_save = control.should_training_stop = True


def last_checkpoint(output_dir: Path) -> Path | None:
    """The latest complete checkpoint in ``output_dir``. Trainer writes trainer_state.json last,
    and removes the older checkpoint only after it: a process killed while saving leaves a
    folder without it, and the one before still whole."""
    complete = [
        path
        for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if checkpoint_step(path) is not None and _readable_state(path / TRAINER_STATE_NAME)
    ]
    return max(complete, key=checkpoint_step, default=None)


def checkpoint_step(path: Path) -> int | None:
    """The step of a Trainer checkpoint folder (``checkpoint-N``); None for another folder."""
    step = path.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
    return int(step) if step.isdigit() else None


def _readable_state(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or cut short mid-write
        return False
    return True


def epoch_of(checkpoint: str | None) -> float:
    """How far training had gone at a checkpoint, in epochs (0 for none)."""
    if checkpoint is None:
        return 0.0
    return TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME)).epoch or 0.0


class LossInProgressBar(ProgressCallback):
    """The progress bar shows the latest loss instead of printing a line per logging step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}")


class LengthBucketSampler(Sampler[int]):
    """Batches of similar-length examples in random order; every example once per epoch.

    transformers' LengthGroupedSampler sorts only within mega-batches of
    min(rows // (4 * batch), 50) batches: on the notebook's 50 rows that is a single batch, so
    nothing gets grouped. Here the whole epoch is sorted (ties broken at random), cut into
    batches, and the full batches shuffled; seeded per epoch, so reruns repeat it exactly. The
    DataLoader cuts this stream every ``batch_size`` indices, so the one incomplete batch (the
    shortest examples) must come last, or every batch after it would straddle two buckets.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        shuffled = torch.randperm(len(self.lengths), generator=generator).tolist()
        longest_first = sorted(shuffled, key=self.lengths.__getitem__, reverse=True)
        full = len(longest_first) // self.batch_size * self.batch_size
        batches = [longest_first[i : i + self.batch_size] for i in range(0, full, self.batch_size)]
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[b]
        yield from longest_first[full:]


class PadToLongest:
    """Batches of examples padded on the right to the longest; padding is never a label."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)

        def padded(key: str, value: int) -> torch.Tensor:
            return torch.tensor([f[key] + [value] * (longest - len(f[key])) for f in features])

        return {
            "input_ids": padded("input_ids", self.pad_token_id),
            "attention_mask": padded("attention_mask", 0),
            "labels": padded("labels", -100),
        }


@contextmanager
def frozen_linears_in_bf16(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """The frozen weights of ``model``'s Linear layers held in bf16 while bf16 autocast runs.

    Autocast caches its bf16 copy of a weight only for weights that train: a frozen base's
    weights (all of them, under PEFT) are cast again at every forward, one more op (a kernel
    launch on a GPU) and a pass over the weight each, 210 of a SmolLM2 step's ~6,000 ops
    (``benchmarks/profile_step.py``). Cast once here, autocast finds them in bf16 and casts
    nothing: the same bf16 copies, so the same results. Weights shared with other modules (an
    embedding tied to the output layer) stay as they are; the fp32 tensors are put back after,
    so a shared base model comes back as it was.
    """
    if not enabled:
        yield
        return
    shared = {id(p) for m in model.modules() if not isinstance(m, nn.Linear)
              for p in m.parameters(recurse=False)}  # fmt: skip
    kept = [(param, param.data) for m in model.modules() if isinstance(m, nn.Linear)
            for param in m.parameters(recurse=False)
            if not param.requires_grad and param.dtype == torch.float32
            and id(param) not in shared]  # fmt: skip
    for param, weights in kept:
        param.data = weights.to(torch.bfloat16)
    try:
        yield
    finally:
        for param, weights in kept:
            param.data = weights


class LengthGroupingTrainer(Trainer):
    """HF Trainer whose training batches can be grouped by length (less padding), whose
    held-out loss is the mean over all held-out tokens (see :meth:`evaluation_loop`), whose
    evaluations during training may read a fixed subset of the held-out rows (see
    :meth:`train`), and whose bf16 autocast casts a frozen base's weights once (see
    :func:`frozen_linears_in_bf16`)."""

    def __init__(
        self, *args, group_by_length: bool = False, eval_subset_rows: int | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.group_by_length = group_by_length
        self.eval_subset_rows = eval_subset_rows

    def train(self, *args, **kwargs):
        """Evaluations during training (curves, a search's reports, early stopping) read the
        first ``eval_subset_rows`` held-out rows, the same ones each time; any evaluation after
        training reads them all."""
        full = self.eval_dataset
        rows = self.eval_subset_rows
        if isinstance(full, Dataset) and rows is not None and rows < len(full):
            self.eval_dataset = full.select(range(rows))
        try:
            with frozen_linears_in_bf16(self.model, enabled=self.args.bf16):
                return super().train(*args, **kwargs)
        finally:
            self.eval_dataset = full

    def evaluate(self, *args, **kwargs):
        with frozen_linears_in_bf16(self.model, enabled=self.args.bf16):
            return super().evaluate(*args, **kwargs)

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.group_by_length or dataset is None:
            return super()._get_train_sampler(train_dataset)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        # Buckets of global batches: accelerate deals each process its share in turn, so a
        # data-parallel step trains on the examples of the single-process batch.
        global_batch = self.args.train_batch_size * self.args.world_size
        return LengthBucketSampler(lengths, global_batch, seed)

    def _get_eval_sampler(self, eval_dataset: Dataset) -> Sampler | None:
        # Longest first: batches of similar lengths pad less; the token-weighted loss is the
        # same in any order.
        lengths = [len(ids) for ids in eval_dataset["input_ids"]]
        return sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)

    def get_eval_dataloader(self, eval_dataset: Dataset | str | None = None) -> DataLoader:
        """The whole held-out set, in every process of a data-parallel job: the token-weighted
        loss is then the single-process one exactly (a set shared out across processes is
        padded with repeated rows), at the cost of each process evaluating it all."""
        if isinstance(eval_dataset, str) or eval_dataset is None:
            eval_dataset = self.eval_dataset
        return DataLoader(
            eval_dataset,
            batch_size=self.args.per_device_eval_batch_size,
            sampler=self._get_eval_sampler(eval_dataset),
            collate_fn=self.data_collator,
        )

    def evaluation_loop(self, dataloader, *args, metric_key_prefix="eval", **kwargs):
        """The held-out loss as the mean over every predicted token of the set.

        Trainer's own loop averages per-batch means, which moves with the eval batch size and
        order. Summing token losses needs no knowledge of the method: the logits of a prompt-
        learning model carry its virtual tokens in front, so label ``j`` of a row of length
        ``L`` is predicted at position ``len(logits) - L + j - 1`` whatever came before.
        """
        model = self._wrap_model(self.model, training=False).eval()
        loss_sum, tokens, rows = torch.zeros((), dtype=torch.float64), 0, 0
        for batch in dataloader:
            batch = self._prepare_inputs(batch)
            labels = batch.pop("labels")
            # In the training precision, as after training, where accelerate wraps the forward.
            where = batch["input_ids"].device.type
            with torch.no_grad(), torch.autocast(where, torch.bfloat16, enabled=self.args.bf16):
                logits = model(**batch).logits
            first = logits.shape[1] - labels.shape[1] - 1  # where label 0 is predicted
            if first < 0:  # nothing before the first token: it is not predicted
                first, labels = 0, labels[:, 1:]
            predicted = logits[:, first:-1].float()
            loss_sum += (
                functional.cross_entropy(
                    predicted.transpose(1, 2), labels, ignore_index=-100, reduction="sum"
                )
                .double()
                .cpu()
            )
            tokens += int((labels != -100).sum())
            rows += len(labels)
        metrics = {f"{metric_key_prefix}_loss": float(loss_sum / tokens)}
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=rows)


def build_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    args: TrainingArguments,
    train_dataset: Dataset | None = None,
    eval_dataset: Dataset | None = None,
    group_by_length: bool = False,
    early_stopping_patience: int | None = None,
    trial: TrialLink | None = None,
    eval_subset_rows: int | None = None,
) -> Trainer:
    # Trainer writes its use_cache into the model's config: keep the shared base model's own.
    args = replace(args, use_cache=model.config.use_cache)
    trainer = LengthGroupingTrainer(
        model=model,
        args=args,
        group_by_length=group_by_length,
        eval_subset_rows=eval_subset_rows,
        data_collator=PadToLongest(tokenizer.pad_token_id),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=[MlflowCurvesCallback(), CheckpointOnInterrupt()],
    )
    if early_stopping_patience is not None:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience))
    if trial is not None:
        trainer.add_callback(ReportToTrial(trial))
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(LossInProgressBar())
    return trainer


def evaluate_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    args: TrainingArguments,
    eval_dataset: Dataset,
) -> float:
    """Held-out loss of ``model`` (mean over tokens), for models not being trained."""
    return build_trainer(model, tokenizer, args, eval_dataset=eval_dataset).evaluate()[
        names.EVAL_LOSS
    ]
