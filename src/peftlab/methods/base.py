"""What every PEFT method tells the rest of peftlab: its settings, its peft config, how it
attaches to the base model and comes off again.

A method is one subclass of :class:`PeftMethod` in a module of this package, registered with
:func:`register`, plus one yaml in ``conf/peft/``. Its dataclass fields are the ``peft.*``
keys and hold their defaults (the yaml only picks the schema). Nothing outside this package
tests a method's name: code asks it what it can do (``is_prompt_learning``) instead.

peft is imported inside methods, not at module level, so that a config composes and validates
without loading torch.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from peftlab.errors import PeftlabError, require

if TYPE_CHECKING:
    from optuna.trial import Trial
    from peft import PeftConfig, PeftModel
    from transformers import PreTrainedModel, TrainerCallback

REGISTRY: dict[str, type[PeftMethod]] = {}
VIRTUAL_TOKENS = [4, 8, 20, 32]  # the search space of every num_virtual_tokens
# Text inits start from a phrase of the embedded data's task (role-play instructions).
INIT_TEXT = "I want you to act as"
ALL_LINEAR = "all-linear"  # peft's shorthand: every linear layer but the output head


def method_name(name: str) -> Any:
    """The ``method`` field of a method's schema: its name as the default, with the key's help."""
    text = (
        "Which method this is (peft's PeftType in lower case), stored in every saved config: "
        "chosen with peft=<method>, e.g. peft=prompt-tuning."
    )
    return field(default=name, metadata={"help": text})


def adapted_layers(*default: str) -> Any:
    """The ``target_modules`` field of a method that adapts layers: ``[all-linear]`` unless the
    method needs particular ones (``default``)."""
    text = (
        "The layers to adapt: [all-linear] every linear layer but the LM head, whatever the "
        "architecture; null peft's per-architecture defaults; or a list of module names."
    )
    return field(default_factory=lambda: list(default or [ALL_LINEAR]), metadata={"help": text})


def key(default: Any, text: str) -> Any:
    """A method's key: its default and help (shown by ``train.py --help`` and the docs)."""
    return field(default=default, metadata={"help": text})


def register(cls: type[PeftMethod]) -> type[PeftMethod]:
    """Class decorator: makes a method available as ``peft.method=<cls.method>``."""
    REGISTRY[cls.method] = cls
    return cls


def of_peft_type(peft_type: str) -> type[PeftMethod]:
    """The method of an adapter saved by peft (its adapter_config.json's peft_type)."""
    found = [method for method in REGISTRY.values() if method.peft_type == peft_type]
    require(bool(found), "peft_type", peft_type, "a type of the methods peftlab offers")
    return found[0]


def require_fractions(method: PeftMethod, *keys: str) -> None:
    """Range check of ``peft.<key>`` values that are shares, dropouts most: in [0, 1)."""
    for key in keys:
        value = getattr(method, key)
        require(0 <= value < 1, f"peft.{key}", value, "in [0, 1)")


def require_counts(method: PeftMethod, *keys: str) -> None:
    """Range check of ``peft.<key>`` values that count something: integers >= 1."""
    for key in keys:
        value = getattr(method, key)
        require(value >= 1, f"peft.{key}", value, "an integer >= 1")


@dataclass
class PeftMethod(ABC):
    """Base of the ``peft`` config group: one subclass per PEFT method.

    Subclasses set ``method`` (the discriminator stored in every saved config, peft's
    ``PeftType`` in lower case) with :func:`method_name` and declare the class-level facts
    below. Each field holds its key's help (``metadata={"help": ...}``): ``train.py --help`` and
    the docs show it.
    """

    method: str = method_name("")

    peft_type: ClassVar[str]  # peft's PeftType name, as written in adapter_config.json
    # Trains tokens in front of the input (True) or changes the base model's layers (False).
    is_prompt_learning: ClassVar[bool]
    # The learning rate used when trainer.learning_rate is null: methods differ by 10x.
    learning_rate: ClassVar[float]
    # Whether peft holds several adapters of the method on one base model at once; if not,
    # they take turns (peftlab generate, the demo).
    shares_a_base: ClassVar[bool] = True

    @classmethod
    def option(cls) -> str:
        """The method's name in the ``peft`` config group: ``conf/peft/<option>.yaml``."""
        return cls.method.replace("_", "-")

    @classmethod
    @abstractmethod
    def suggest(cls, trial: Trial) -> None:
        """Ask an Optuna trial for this method's ``peft.*`` keys: its search space.

        One study searches across methods, and Optuna allows one distribution per name: a key
        that several methods share offers the same choices in each (``VIRTUAL_TOKENS``).
        """

    @abstractmethod
    def peft_config(self, model: PreTrainedModel, tokenizer_path: str) -> PeftConfig:
        """peft's config for this method on ``model`` (whose tokenizer lives at the path)."""

    def trainer_callbacks(self, peft_model: PeftModel) -> list[TrainerCallback]:
        """What the method does while it trains, beyond the optimizer's step (AdaLoRA's rank
        budget): Trainer callbacks; most methods need none."""
        return []

    @contextmanager
    def attached(self, model: PreTrainedModel, tokenizer_path: str) -> Iterator[PeftModel]:
        """A fresh, trainable adapter on ``model``; afterwards ``model`` is as it was.

        Methods that inject layers modify ``model`` in place; they are unloaded (not merged)
        whatever happens, so the next job of a sweep starts from the same base weights. A
        method that does not fit the model fails in one line, the model left as it was.
        """
        peft_model = self._applied(model, self.peft_config(model, tokenizer_path))
        try:
            yield peft_model
        finally:
            self.detach(peft_model)

    @classmethod
    def detach(cls, peft_model: PeftModel) -> None:
        """Take the method's adapters off the base model, not merged (a prompt-learning adapter
        never was on it)."""
        if not cls.is_prompt_learning:
            peft_model.unload()

    def _applied(self, model: PreTrainedModel, config: PeftConfig) -> PeftModel:
        from peft import get_peft_model

        try:
            return get_peft_model(model, config)
        except (ValueError, TypeError, NotImplementedError) as error:
            # peft checks shapes layer by layer: the layers adapted before the failing one go.
            restore_base_layers(model)
            raise PeftlabError(self._misfit(model, error)) from error

    def _misfit(self, model: PreTrainedModel, error: Exception) -> str:
        """One line: this method, its keys that peft's complaint names, the model, the why."""
        reason = " ".join(str(error).split())
        keys = [f.name for f in fields(self) if f.name != "method"]
        named = [key for key in keys if re.search(rf"\b({key}|{key.replace('_', ' ')})\b", reason)]
        values = ", ".join(f"peft.{key}={getattr(self, key)!r}" for key in named or keys)
        return (
            f"peft={self.option()} ({values}) cannot apply to {model.name_or_path} "
            f"(model_type {model.config.model_type}): {reason}"
        )


def restore_base_layers(model: PreTrainedModel) -> None:
    """Put back every base layer a peft tuner wrapped in ``model``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())


@dataclass
class LayerMethod(PeftMethod):
    """A method that adapts the base model's layers, configured by the peft config class named
    ``config_class``: every field but ``method`` is one of its keys, of the same name."""

    is_prompt_learning: ClassVar[bool] = False
    config_class: ClassVar[str]  # in peft's namespace, e.g. "LoHaConfig"

    def peft_config(self, model, tokenizer_path):
        import peft

        keys = {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.name != "method"}
        if "target_modules" in keys:
            keys["target_modules"] = target_modules(
                keys["target_modules"], model, None, "peft.target_modules"
            )
        config_class = getattr(peft, self.config_class)
        return config_class(task_type=peft.TaskType.CAUSAL_LM, **keys)


def plain(value: Any) -> Any:
    """An enum key's value as peft takes it: the string."""
    return value.value if isinstance(value, Enum) else value


def target_modules(
    names: list[str] | None,
    model: PreTrainedModel,
    defaults: dict[str, list[str]] | None,
    key: str,
) -> list[str] | str | None:
    """The modules an injecting method adapts: ``[all-linear]`` (every linear layer but the LM
    head), null (``defaults`` for the model's architecture; with no ``defaults``, peft's own
    choice) or the modules named."""
    if names == [ALL_LINEAR]:
        return ALL_LINEAR
    model_type = model.config.model_type
    if names is None and defaults is None:
        return None
    if names is None:
        require(
            model_type in defaults,
            key,
            None,
            f"no per-architecture default for model_type {model_type!r}; "
            f"name the modules, e.g. {key}=[{ALL_LINEAR}]",
        )
        return list(defaults[model_type])
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [name for name in names if name.rsplit(".", 1)[-1] not in present]
    require(not missing, key, names, f"modules of this {model_type} model (no {missing})")
    return list(names)
