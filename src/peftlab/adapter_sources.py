"""Where tuned adapters come from: a run's ``adapter/`` artifact or a folder, with the settings
its run generated with and the template it prompted with.

Reading a source needs no model: ``peftlab generate`` answers a mistyped run in the time it
takes to ask the store, before :mod:`peftlab.adapters` loads torch, peft and a base model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from peftlab import formats, names
from peftlab.cache import cache_dir
from peftlab.config import GenerationSettings, ModelConfig
from peftlab.errors import PeftlabError
from peftlab.schema import DatasetConfig, typed_section

CONFIG = ".hydra/config.yaml"  # where train.py's runs keep their resolved config


@dataclass(frozen=True)
class AdapterSource:
    """Where one adapter comes from and how its run generated."""

    name: str  # unique adapter name on the shared model
    label: str  # what people see: the run's name or the folder
    adapter_dir: Path
    base: str  # the base checkpoint the adapter was trained on (adapter_config.json)
    peft_type: str  # the method that trained it (adapter_config.json), e.g. LORA
    model: ModelConfig
    generation: GenerationSettings
    eval_loss: float | None = None
    # The run's data: a task's format and template turn a person's inputs into its prompts.
    dataset: DatasetConfig | None = None

    def prompt(self, inputs: Mapping[str, str], tokenizer) -> str:
        """The prompt the run's template makes of ``inputs`` (its format's ``inputs()``)."""
        if self.dataset is None:
            raise PeftlabError(
                f"--run {self.label!r}: no saved config, hence no template: use a prompt"
            )
        try:
            return formats.of(self.dataset).prompt_from(inputs, tokenizer)
        except PeftlabError as error:
            raise PeftlabError(f"--run {self.label!r}: {error}") from None

    @property
    def inputs(self) -> list[str]:
        return formats.of(self.dataset).inputs() if self.dataset is not None else []

    def prompt_for(self, text: str, tokenizer) -> str:
        """What a person typed, as the run prompts with it: the text itself for a plain-text
        run; for a task run its template filled with the text (its one input), or with the
        ``NAME=VALUE`` lines of the text (several inputs)."""
        if not self.inputs:
            return text
        if len(self.inputs) == 1:
            return self.prompt({self.inputs[0]: text}, tokenizer)
        return self.prompt(dict(name_value(line) for line in text.splitlines() if line), tokenizer)


def name_value(item: str) -> tuple[str, str]:
    """``act=Poet`` as ("act", "Poet")."""
    name, equals, value = item.partition("=")
    if not equals or not name.strip():
        raise PeftlabError(f"input {item!r}: write NAME=VALUE, e.g. act=Poet")
    return name.strip(), value


def resolve(spec: str, client: MlflowClient) -> AdapterSource:
    """An adapter folder, or an MLflow run id whose run logged an ``adapter/`` artifact."""
    if Path(spec).is_dir():
        return from_dir(Path(spec))
    try:
        run = client.get_run(spec)
    except MlflowException as error:
        raise PeftlabError(
            f"--run {spec!r}: no such adapter folder, nor run in {client.tracking_uri}"
        ) from error
    return from_run(run, client)


def from_dir(adapter_dir: Path) -> AdapterSource:
    base, peft_type = _written_by(adapter_dir, spec=str(adapter_dir))
    saved = adapter_dir.parent / CONFIG  # a run folder written by train.py
    found = _saved_settings(saved) if saved.is_file() else (None, GenerationSettings(), None)
    model, settings, dataset = found
    return AdapterSource(
        name=adapter_dir.resolve().parent.name + "/" + adapter_dir.name,
        label=str(adapter_dir),
        adapter_dir=adapter_dir,
        base=base,
        peft_type=peft_type,
        model=model or ModelConfig(name_or_path=base),
        generation=settings,
        dataset=dataset,
    )


def from_run(run, client: MlflowClient) -> AdapterSource:
    run_id = run.info.run_id
    target = cache_dir() / "runs" / run_id
    try:
        adapter_dir = Path(_download(client, run_id, names.ADAPTER_DIR, target))
    except (MlflowException, OSError) as error:
        raise PeftlabError(
            f"--run {run_id!r}: the run has no adapter/ artifact "
            f"(status {run.info.status}); train one with `make train`"
        ) from error
    base, peft_type = _written_by(adapter_dir, spec=run_id)
    try:
        model, settings, dataset = _saved_settings(Path(_download(client, run_id, CONFIG, target)))
    except (MlflowException, OSError):  # logged by something other than train.py
        model, settings, dataset = ModelConfig(name_or_path=base), GenerationSettings(), None
    return AdapterSource(
        name=run_id,
        label=run.info.run_name or run_id,
        adapter_dir=adapter_dir,
        base=base,
        peft_type=peft_type,
        model=model,
        generation=settings,
        eval_loss=run.data.metrics.get(names.EVAL_LOSS),
        dataset=dataset,
    )


def _download(client: MlflowClient, run_id: str, path: str, target: Path) -> str:
    return mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=path, dst_path=str(target), tracking_uri=client.tracking_uri
    )


def _written_by(adapter_dir: Path, spec: str) -> tuple[str, str]:
    """The adapter's base model and peft_type, from its adapter_config.json."""
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        raise PeftlabError(f"--run {spec!r}: no adapter_config.json in {adapter_dir}")
    written = json.loads(config.read_text())
    return written["base_model_name_or_path"], written["peft_type"]


def _saved_settings(
    config_yaml: Path,
) -> tuple[ModelConfig, GenerationSettings, DatasetConfig | None]:
    saved = OmegaConf.load(config_yaml)
    dataset = typed_section(saved, "dataset", DatasetConfig) if "dataset" in saved else None
    return (
        typed_section(saved, "model", ModelConfig),
        typed_section(saved, "generation", GenerationSettings),
        dataset,
    )


def with_overrides(settings: GenerationSettings, **overrides) -> GenerationSettings:
    """Settings with the given values replaced; None leaves a value as the run stored it."""
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
