"""The config tree's schema, put together from what each part declares, and the typed settings
a composed config becomes.

The sections of :mod:`peftlab.config`, each data format's ``dataset.*`` keys (``formats/``), one
schema per PEFT method (``methods/``) and the generation metrics (``metrics/``) meet here, and
nowhere below: those layers import none of this. Registered in Hydra's ConfigStore, the schema
makes an unknown key or a value of the wrong type fail while Hydra composes; :func:`to_settings`
then runs the range checks, still before any model loads.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from peftlab.config import (
    SAMPLES_DIR,
    DatasetBase,
    GenerationSettings,
    ModelConfig,
    TrackingConfig,
    TrainerConfig,
)
from peftlab.errors import PeftlabError, require
from peftlab.formats import REGISTRY as FORMATS
from peftlab.formats.base import TRAIN_ON
from peftlab.methods import REGISTRY as METHODS
from peftlab.methods import PeftMethod
from peftlab.metrics import REGISTRY as METRICS
from peftlab.reference import register_help

T = TypeVar("T")
# Each config group whose options share one schema, by the name its yaml picks it with.
SECTIONS = {
    "model": ModelConfig,
    "trainer": TrainerConfig,
    "generation": GenerationSettings,
    "tracking": TrackingConfig,
}


# The shared keys and every format's own, flat under ``dataset``: a key of any format may be
# set whatever the format (it is read only by its own), so a format switched on the command
# line (dataset.format=completion) composes like one picked in a yaml.
@dataclass(unsafe_hash=True)
class DatasetConfig(*(format.keys for format in FORMATS.values()), DatasetBase):
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
        super().__post_init__()


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
        """Nulls that stand for another part's default, resolved: the settings as used; the
        files a run reads beside its data, checked."""
        if isinstance(self.peft, PeftMethod) and self.trainer.learning_rate is None:
            self.trainer.learning_rate = self.peft.learning_rate
        self.generation.metrics = metric_names(self.generation.metrics)
        self.generation.check_files()


def metric_names(requested: list[str] | None) -> list[str]:
    """The generation metrics a run scores: those named, checked; null, every one there is."""
    if requested is None:
        return list(METRICS)
    unknown = [name for name in requested if name not in METRICS]
    require(not unknown, "generation.metrics", unknown, f"names of {', '.join(METRICS)}")
    return list(requested)


def groups() -> dict[str, type]:
    """Every config group's schema by name, the peft group's one per method (``peft.<method>``):
    what the docs' key tables and ``train.py --help`` list."""
    sections = {"model": ModelConfig, "dataset": DatasetConfig} | SECTIONS
    return sections | {f"peft.{method}": schema for method, schema in METHODS.items()}


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


METHOD_SCHEMAS = "schema/peft"  # a conf/peft/<option>.yaml picks `/schema/peft@_here_: <method>`


def register_configs() -> None:
    """Register schemas and resolvers; idempotent so tests and sweeps can call it again."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, schema in SECTIONS.items():
        cs.store(group=group, name=f"{group}_schema", node=schema)
    for method, schema in METHODS.items():
        # Not in the peft group itself: there, `peft=glob(*)` would sweep each method twice.
        cs.store(group=METHOD_SCHEMAS, name=method, node=schema)
    OmegaConf.register_new_resolver("peftlab.package_dir", package_dir, replace=True)
    OmegaConf.register_new_resolver("peftlab.sample", sample_path, replace=True)
    register_help(groups())


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
    require(method in METHODS, "peft.method", method, f"one of {', '.join(METHODS)}")
    schema = OmegaConf.structured(TrainConfig)
    schema.peft = OmegaConf.structured(METHODS[method])
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
