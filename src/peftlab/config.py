"""The sections of the config tree, one typed dataclass each: every key, its default and its
help, written once here.

A leaf: it imports only the errors. The tree's other parts are declared where they belong (a
PEFT method's keys in its module under ``methods/``, a data format's in ``formats/``) and put
together with these sections in :mod:`peftlab.schema`. Range checks live in ``__post_init__``
and run when the composed config becomes objects, before any model loads.
"""

from __future__ import annotations

from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from peftlab.errors import require

SAMPLES_DIR = Path(__file__).parent / "samples"
EVAL_STRATEGIES = ("no", "epoch", "steps")
LOCAL_STORE = "mlruns/mlflow.db"  # the default MLflow store, under the folder runs start from


def setting(default: Any = NO_DEFAULT, help: str = "", **kwargs: Any) -> Any:
    """A config key's default and its one-line help (shown by the docs and ``train.py --help``).
    A list or dict default is copied for each config."""
    if isinstance(default, list | dict):
        kwargs["default_factory"] = lambda: type(default)(default)
    elif default is not NO_DEFAULT:
        kwargs["default"] = default
    return field(metadata={"help": help}, **kwargs)


def local_store_uri(folder: Path | str | None = None) -> str:
    """The default MLflow store of runs started in ``folder`` (the current one by default)."""
    return f"sqlite:///{Path(folder or Path.cwd()).resolve()}/{LOCAL_STORE}"


class DType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Precision(str, Enum):
    """Training arithmetic. ``auto`` picks bf16 where the hardware runs it natively."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


# Hashable: jobs of a sweep that share a model or dataset config share what it loads.
@dataclass(unsafe_hash=True)
class ModelConfig:
    name_or_path: str = setting(MISSING, "a Hugging Face model id, or a local folder")
    gguf_file: str | None = setting(None, "a GGUF file in that folder, converted once and cached")
    dtype: DType = setting(DType.float32, "the frozen base model's weights: float32, bfloat16")
    revision: str | None = setting(None, "of a Hub model: a branch, tag or commit")
    trust_remote_code: bool = setting(False, "run a Hub model's own code (only when you trust it)")


@dataclass(unsafe_hash=True)
class DatasetBase:
    """The ``dataset`` keys every format shares; each format adds its own (``formats/``)."""

    name: str = setting(MISSING, "the dataset's name, as runs are tagged")
    path: str | None = setting(None, "a Hub dataset id (instead of data_files)")
    revision: str | None = setting(None, "of a Hub dataset: a branch, tag or commit")
    data_files: str | None = setting(None, "a local file: CSV, JSON lines, JSON or Parquet")
    split: str = setting("train", "the split rows are read from")
    format: str = setting("text", "how rows become examples: a module of peftlab/formats")
    train_on: str | None = setting(
        None, "tokens the loss is on: completion (the answer's) or all; null: the format's"
    )
    train_rows: int | None = setting(None, "the first rows, for training; null: all not held out")
    eval_rows: int = setting(30, "the last rows, held out")
    split_seed: int | None = setting(
        None, "null: first rows train, last rows held out; else a seeded shuffle first"
    )
    eval_data_files: str | None = setting(None, "a file of held-out rows (its first eval_rows)")
    eval_split: str | None = setting(None, "of a Hub dataset: the split of held-out rows")
    max_length: int = setting(128, "tokens per example; longer ones are cut")
    on_bad_lines: str = setting("error", "rows of a local file that do not parse: error or skip")

    def __post_init__(self) -> None:
        require(
            self.eval_data_files is None or self.eval_split is None,
            "dataset.eval_split",
            self.eval_split,
            "null when dataset.eval_data_files is set (one held-out source)",
        )
        require(
            self.on_bad_lines in ("error", "skip"),
            "dataset.on_bad_lines",
            self.on_bad_lines,
            "error or skip",
        )
        require(
            self.path is not None or self.data_files is not None,
            "dataset.data_files",
            self.data_files,
            "set dataset.data_files (a local file) or dataset.path (a Hub dataset id)",
        )
        require(
            self.train_rows is None or self.train_rows >= 1,
            "dataset.train_rows",
            self.train_rows,
            "null (every row not held out) or an integer >= 1",
        )
        require(self.eval_rows >= 1, "dataset.eval_rows", self.eval_rows, "an integer >= 1")
        require(self.max_length >= 2, "dataset.max_length", self.max_length, "an integer >= 2")


@dataclass
class TrainerConfig:
    """The subset of ``transformers.TrainingArguments`` that peftlab exposes, same names."""

    num_train_epochs: float = setting(6.0, "passes over the training rows")
    learning_rate: float | None = setting(None, "null: the PEFT method's own (see its module)")
    per_device_train_batch_size: int = setting(8, "examples per training step")
    per_device_eval_batch_size: int = setting(16, "examples per held-out batch")
    lr_scheduler_type: str = setting("linear", "transformers' scheduler name")
    warmup_steps: int = setting(0, "steps of linear warm-up")
    weight_decay: float = setting(0.0, "AdamW's weight decay")
    logging_steps: int = setting(1, "steps between points of the train_loss curve")
    seed: int = setting(42, "adapter init, data order and sampling")
    precision: Precision = setting(
        Precision.auto, "auto: bf16 autocast where the CPU/GPU runs bf16 natively, else fp32"
    )
    group_by_length: bool = setting(
        True, "batch examples of similar length: less padding, same examples per epoch"
    )
    eval_strategy: str = setting(
        "no", "no, epoch or steps (every eval_steps): an eval_loss curve during training"
    )
    eval_steps: int | None = setting(None, "steps between evaluations with eval_strategy=steps")
    eval_subset_rows: int | None = setting(
        None, "held-out rows evaluated during training (the first N; null: all); final: all"
    )
    save_strategy: str = setting(
        "epoch", "checkpoints to resume from (the latest kept): epoch, steps or no"
    )
    save_steps: int | None = setting(None, "steps between checkpoints with save_strategy=steps")
    early_stopping_patience: int | None = setting(
        None, "stop after this many evaluations without a lower eval_loss, keeping the best"
    )

    def __post_init__(self) -> None:
        require(self.num_train_epochs > 0, "trainer.num_train_epochs", self.num_train_epochs, "> 0")
        require(
            self.eval_strategy in EVAL_STRATEGIES,
            "trainer.eval_strategy",
            self.eval_strategy,
            f"one of {', '.join(EVAL_STRATEGIES)}",
        )
        require(
            self.save_strategy in EVAL_STRATEGIES,
            "trainer.save_strategy",
            self.save_strategy,
            f"one of {', '.join(EVAL_STRATEGIES)}",
        )
        require(
            self.save_strategy != "steps" or (self.save_steps or 0) >= 1,
            "trainer.save_steps",
            self.save_steps,
            "an integer >= 1 with trainer.save_strategy=steps",
        )
        require(
            self.eval_strategy != "steps" or (self.eval_steps or 0) >= 1,
            "trainer.eval_steps",
            self.eval_steps,
            "an integer >= 1 with trainer.eval_strategy=steps",
        )
        require(
            self.eval_subset_rows is None or self.eval_subset_rows >= 1,
            "trainer.eval_subset_rows",
            self.eval_subset_rows,
            "null (every held-out row) or an integer >= 1",
        )
        require(
            self.early_stopping_patience is None
            or (self.early_stopping_patience >= 1 and self.eval_strategy != "no"),
            "trainer.early_stopping_patience",
            self.early_stopping_patience,
            "null, or an integer >= 1 with trainer.eval_strategy=epoch or steps",
        )
        require(
            self.learning_rate is None or self.learning_rate > 0,
            "trainer.learning_rate",
            self.learning_rate,
            "> 0, or null for the PEFT method's default",
        )
        for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "logging_steps"):
            value = getattr(self, key)
            require(value >= 1, f"trainer.{key}", value, "an integer >= 1")


@dataclass
class GenerationSettings:
    prompts: list[str] = setting(
        [
            "I want you to act as a motivational coach.",
            "There are two nice things that should matter to you:",
        ],
        "probe prompts generated from before and after tuning (the notebook's two)",
    )
    max_new_tokens: int = setting(48, "tokens generated per probe prompt")
    eval_rows: int | None = setting(
        None, "held-out prompts generated from and scored (formats with prompts); null: all"
    )
    eval_max_new_tokens: int = setting(96, "tokens generated per held-out prompt")
    eval_batch_size: int = setting(16, "held-out prompts generated at a time")
    metrics: list[str] | None = setting(
        None, "scores of the held-out generations (rougeL, chrf, ...); null: every metric"
    )
    repetition_penalty: float = setting(1.5, "> 1 discourages repeating tokens")
    do_sample: bool = setting(False, "sample instead of greedy decoding")
    temperature: float = setting(1.0, "with do_sample: flatter (> 1) or sharper (< 1)")
    top_p: float = setting(1.0, "with do_sample: nucleus sampling's probability mass")
    general_data_files: str | None = setting(
        "${peftlab.sample:general.jsonl}",
        "a file of general prose (column text): its loss tuned minus untuned is "
        "eval_forgetting; null: not measured",
    )

    def __post_init__(self) -> None:
        for key in ("max_new_tokens", "eval_max_new_tokens", "eval_batch_size"):
            value = getattr(self, key)
            require(value >= 1, f"generation.{key}", value, "an integer >= 1")
        require(
            self.eval_rows is None or self.eval_rows >= 0,
            "generation.eval_rows",
            self.eval_rows,
            "null (every held-out row) or an integer >= 0 (0: no scored generations)",
        )
        require(
            self.repetition_penalty > 0,
            "generation.repetition_penalty",
            self.repetition_penalty,
            "> 0",
        )

    def check_files(self) -> None:
        """The general text is there: checked for a run only, since the settings a logged model
        reloads may name a file of the machine that trained it."""
        name = self.general_data_files
        require(
            name is None or Path(name).expanduser().is_file(),
            "generation.general_data_files",
            name,
            "an existing file of general text (.jsonl, .json, .csv or .parquet with a text "
            "column), or null (no eval_forgetting)",
        )


@dataclass
class TrackingConfig:
    uri: str = setting(
        f"sqlite:///${{hydra:runtime.cwd}}/{LOCAL_STORE}",
        "the MLflow store: sqlite:///PATH, http(s)://HOST:PORT, postgresql://...",
    )
    experiment: str = setting("peftlab", "the MLflow experiment")
    artifact_location: str | None = setting(
        None, "where a new experiment's artifacts go; null: the store's own"
    )
    run_name: str | None = setting(None, "null: a sweep's job is named by its overrides")
    tags: dict[str, str] = setting({}, "extra tags on every run")
    system_metrics: bool = setting(True, "CPU, memory, disk, network (and GPU) as system/*")
    system_metrics_interval_s: float = setting(10.0, "seconds between system metric samples")

    def __post_init__(self) -> None:
        require(
            self.system_metrics_interval_s > 0,
            "tracking.system_metrics_interval_s",
            self.system_metrics_interval_s,
            "> 0",
        )
