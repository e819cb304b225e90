"""A run's logged MLflow model, ``model``: prompts in, the tuned adapter's continuations out.

A task run's model takes its inputs instead (the columns its prompt template names, e.g.
``act``; ``user`` for a chat run) and makes its prompts as the run did.

It holds the adapter and the run's config, and references the base model by the config's
``model`` section (a Hub id, a path, or the embedded GGUF's package) instead of copying it.
Loading it attaches the adapter through :class:`peftlab.adapters.AdapterBank` and generates with
:func:`peftlab.generation.generate`, so ``predict`` returns exactly the run's ``samples.json``
text; generation settings can be passed as params at predict time.
"""

from __future__ import annotations

import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from omegaconf import OmegaConf

from peftlab import adapter_sources, formats, names
from peftlab.adapters import AdapterBank
from peftlab.config import GenerationSettings
from peftlab.redaction import copy_redacted
from peftlab.schema import TrainConfig, register_configs

NAME = names.MODEL_ARTIFACT
MODEL_CODE = Path(__file__).with_name("mlflow_model_code.py")
# What loading and predicting imports; the model's environment pins what this run used.
REQUIREMENTS = (
    "torch", "transformers", "peft", "accelerate", "safetensors", "gguf", "mlflow", "hydra-core",
    "omegaconf", "datasets", "huggingface_hub",
)  # fmt: skip
PARAM_TYPES = {int: "long", float: "double", bool: "boolean"}
# The generation settings a caller may change at predict time.
PREDICT_PARAMS = ("max_new_tokens", "repetition_penalty", "do_sample", "temperature", "top_p")


class TunedLanguageModel(mlflow.pyfunc.PythonModel):
    """Generates with one tuned adapter on its base model."""

    def load_context(self, context) -> None:
        register_configs()  # the saved config's resolvers (the embedded model's package)
        self.source = adapter_sources.from_dir(Path(context.artifacts["run"]) / names.ADAPTER_DIR)
        self.bank = AdapterBank.for_sources([self.source])

    # A DataFrame, as MLflow makes of any input under the signature; the hint also keeps MLflow
    # from inferring a signature from it, which would drop the params.
    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> list[str]:
        settings = adapter_sources.with_overrides(self.source.generation, **(params or {}))
        texts = prompts(model_input, self.source, self.bank.loaded.tokenizer)
        return [self.bank.generate(p, settings, self.source.name) for p in texts]


def prompts(model_input, source: adapter_sources.AdapterSource, tokenizer) -> list[str]:
    """A task run's inputs as a DataFrame of its columns; else a list of prompts, one prompt, or
    a DataFrame whose first column holds them (what ``mlflow models serve`` makes of
    ``{"inputs": [...]}``)."""
    names = source.inputs
    if names and isinstance(model_input, pd.DataFrame) and set(names) <= set(model_input):
        rows = model_input[names].astype(str).to_dict("records")
        return [source.prompt(row, tokenizer) for row in rows]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        return [str(value) for value in model_input.iloc[:, 0]]
    return [str(value) for value in model_input]


def signature(settings: GenerationSettings, inputs: list[str]) -> ModelSignature:
    """Prompts (or a task's inputs) in, continuations out; the generation settings as params,
    the run's as defaults."""
    params = [
        ParamSpec(name, PARAM_TYPES[type(getattr(settings, name))], getattr(settings, name))
        for name in PREDICT_PARAMS
    ]
    return ModelSignature(
        inputs=Schema([ColSpec("string", name) for name in inputs] or [ColSpec("string")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema(params),
    )


def log(settings: TrainConfig, adapter_dir: Path, config_dir: Path | None) -> None:
    """Log the model of the active run: its adapter and config, as a run folder."""
    with tempfile.TemporaryDirectory() as staging:
        run = Path(staging, "run")
        shutil.copytree(adapter_dir, run / names.ADAPTER_DIR)
        saved = config_dir / names.CONFIG_FILE if config_dir is not None else None
        (run / names.CONFIG_DIR).mkdir()
        if saved is not None and saved.is_file():
            # As written by Hydra: `${peftlab.package_dir:...}` resolves where the model loads.
            copy_redacted(saved, run / names.CONFIG_DIR / names.CONFIG_FILE)
        else:
            sections = {"model": settings.model, "generation": settings.generation}
            OmegaConf.save(
                OmegaConf.structured(sections), run / names.CONFIG_DIR / names.CONFIG_FILE
            )
        mlflow.pyfunc.log_model(
            name=NAME,
            python_model=str(MODEL_CODE),
            artifacts={"run": str(run)},
            signature=signature(settings.generation, formats.of(settings.dataset).inputs()),
            pip_requirements=[f"{name}=={metadata.version(name)}" for name in REQUIREMENTS],
        )
