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

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from peftlab.errors import require

if TYPE_CHECKING:
    from optuna.trial import Trial
    from peft import PeftConfig, PeftModel
    from transformers import PreTrainedModel

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


def register(cls: type[PeftMethod]) -> type[PeftMethod]:
    """Class decorator: makes a method available as ``peft.method=<cls.method>``."""
    REGISTRY[cls.method] = cls
    return cls


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

    @contextmanager
    def attached(self, model: PreTrainedModel, tokenizer_path: str) -> Iterator[PeftModel]:
        """A fresh, trainable adapter on ``model``; afterwards ``model`` is as it was.

        Methods that inject layers modify ``model`` in place; they are unloaded (not merged)
        whatever happens, so the next job of a sweep starts from the same base weights.
        """
        from peft import get_peft_model

        peft_model = get_peft_model(model, self.peft_config(model, tokenizer_path))
        try:
            yield peft_model
        finally:
            if not self.is_prompt_learning:
                peft_model.unload()


def target_modules(
    names: list[str] | None, model: PreTrainedModel, defaults: dict[str, list[str]], key: str
) -> list[str] | str:
    """The modules an injecting method adapts: ``[all-linear]`` (every linear layer but the LM
    head), null (``defaults`` for the model's architecture) or the modules named."""
    if names == [ALL_LINEAR]:
        return ALL_LINEAR
    model_type = model.config.model_type
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
