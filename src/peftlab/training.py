"""Hugging Face Trainer set up for prompt tuning: arguments, precision, loss logging."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import mlflow
import torch
from datasets import Dataset
from transformers import (
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from peftlab.config import Precision, TrainerConfig


@cache
def native_bf16() -> bool:
    """Whether bf16 runs in hardware here; emulated bf16 is slower than fp32."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: Precision) -> bool:
    return precision == Precision.bf16 or (precision == Precision.auto and native_bf16())


def training_arguments(cfg: TrainerConfig, output_dir: Path) -> TrainingArguments:
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
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=False,
        label_names=["labels"],
    )


class MlflowLossCallback(TrainerCallback):
    """Logs the training loss to the active MLflow run at every logging step (a curve)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            mlflow.log_metric("train_loss", logs["loss"], step=state.global_step)


class LossInProgressBar(ProgressCallback):
    """The progress bar shows the latest loss instead of printing a line per logging step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}")


def build_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    args: TrainingArguments,
    train_dataset: Dataset | None = None,
    eval_dataset: Dataset | None = None,
) -> Trainer:
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=[MlflowLossCallback()],
    )
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(LossInProgressBar())
    return trainer


def evaluate_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    args: TrainingArguments,
    eval_dataset: Dataset,
) -> float:
    """Mean held-out loss of ``model`` as Trainer computes it, for models not being trained."""
    return build_trainer(model, tokenizer, args, eval_dataset=eval_dataset).evaluate()["eval_loss"]
