"""Tuned prompts in use: adapters from runs or folders, attached to one shared base model.

As in the notebook, every adapter is loaded onto a single copy of the base model and picked
with ``set_adapter``; N adapters cost one base model plus N small prompt tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from peft import PeftModel

from peftlab import generation, modeling
from peftlab.config import GenerationSettings, ModelConfig, typed_section
from peftlab.errors import PeftlabError

CONFIG = ".hydra/config.yaml"  # where train.py's runs keep their resolved config


@dataclass(frozen=True)
class AdapterSource:
    """Where one adapter comes from and how its run generated."""

    name: str  # unique adapter name on the shared model
    label: str  # what people see: the run's name or the folder
    adapter_dir: Path
    base: str  # the base checkpoint the adapter was trained on (adapter_config.json)
    model: ModelConfig
    generation: GenerationSettings
    eval_loss: float | None = None


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
    base = _base_of(adapter_dir, spec=str(adapter_dir))
    saved = adapter_dir.parent / CONFIG  # a run folder written by train.py
    model, settings = _saved_settings(saved) if saved.is_file() else (None, GenerationSettings())
    return AdapterSource(
        name=adapter_dir.resolve().parent.name + "/" + adapter_dir.name,
        label=str(adapter_dir),
        adapter_dir=adapter_dir,
        base=base,
        model=model or ModelConfig(name_or_path=base),
        generation=settings,
    )


def from_run(run, client: MlflowClient) -> AdapterSource:
    run_id = run.info.run_id
    target = modeling.cache_dir() / "runs" / run_id
    try:
        adapter_dir = Path(_download(client, run_id, "adapter", target))
    except (MlflowException, OSError) as error:
        raise PeftlabError(
            f"--run {run_id!r}: the run has no adapter/ artifact "
            f"(status {run.info.status}); train one with `make train`"
        ) from error
    base = _base_of(adapter_dir, spec=run_id)
    try:
        model, settings = _saved_settings(Path(_download(client, run_id, CONFIG, target)))
    except (MlflowException, OSError):  # logged by something other than train.py
        model, settings = ModelConfig(name_or_path=base), GenerationSettings()
    return AdapterSource(
        name=run_id,
        label=run.info.run_name or run_id,
        adapter_dir=adapter_dir,
        base=base,
        model=model,
        generation=settings,
        eval_loss=run.data.metrics.get("eval_loss"),
    )


def _download(client: MlflowClient, run_id: str, path: str, target: Path) -> str:
    return mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=path, dst_path=str(target), tracking_uri=client.tracking_uri
    )


def _base_of(adapter_dir: Path, spec: str) -> str:
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        raise PeftlabError(f"--run {spec!r}: no adapter_config.json in {adapter_dir}")
    return json.loads(config.read_text())["base_model_name_or_path"]


def _saved_settings(config_yaml: Path) -> tuple[ModelConfig, GenerationSettings]:
    saved = OmegaConf.load(config_yaml)
    return (
        typed_section(saved, "model", ModelConfig),
        typed_section(saved, "generation", GenerationSettings),
    )


class AdapterBank:
    """One base model with any number of adapters of that base attached, by name."""

    def __init__(self, model: ModelConfig, base: str) -> None:
        self.base = base
        self.loaded = modeling.load(model)
        self.peft_model: PeftModel | None = None
        self.sources: dict[str, AdapterSource] = {}

    @classmethod
    def for_sources(cls, sources: list[AdapterSource]) -> AdapterBank:
        bases = {source.base for source in sources}
        if len(bases) > 1:
            listing = "; ".join(f"{s.label} -> {s.base}" for s in sources)
            raise PeftlabError(f"--run: adapters of different base models in one call: {listing}")
        bank = cls(sources[0].model, sources[0].base)
        for source in sources:
            bank.attach(source)
        return bank

    def attach(self, source: AdapterSource) -> None:
        if source.name in self.sources:
            return
        if source.base != self.base:
            raise PeftlabError(
                f"--run {source.label!r}: trained on {source.base}, not on {self.base}"
            )
        self._check_width(source)
        if self.peft_model is None:
            self.peft_model = PeftModel.from_pretrained(
                self.loaded.model, source.adapter_dir, adapter_name=source.name
            )
        else:
            self.peft_model.load_adapter(source.adapter_dir, adapter_name=source.name)
        self.peft_model.eval()
        self.sources[source.name] = source

    def _check_width(self, source: AdapterSource) -> None:
        config = json.loads((source.adapter_dir / "adapter_config.json").read_text())
        hidden = self.loaded.model.get_input_embeddings().embedding_dim
        if config.get("token_dim") not in (None, hidden):
            raise PeftlabError(
                f"--run {source.label!r}: adapter token_dim {config['token_dim']} does not match "
                f"the hidden size {hidden} of the base model {self.base}"
            )

    def generate(self, prompt: str, settings: GenerationSettings, name: str | None = None) -> str:
        """Output of the adapter ``name``, or of the untuned base model when ``name`` is None."""
        soft_prompt = None
        if name is not None:
            self.peft_model.set_adapter(name)
            soft_prompt = generation.soft_prompt(self.peft_model)
        return generation.generate(
            self.loaded.model, self.loaded.tokenizer, prompt, settings, soft_prompt
        )


def with_overrides(settings: GenerationSettings, **overrides) -> GenerationSettings:
    """Settings with the given values replaced; None leaves a value as the run stored it."""
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
