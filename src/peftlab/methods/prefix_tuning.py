"""Prefix tuning: trainable keys and values in front of every attention layer's own
(peft.PrefixTuningConfig, Li & Liang 2021), optionally produced by an MLP over the prefix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftlab.methods.base import VIRTUAL_TOKENS, PeftMethod, register, require_counts


@register
@dataclass
class PrefixTuning(PeftMethod):
    method: str = "prefix_tuning"
    num_virtual_tokens: int = 20
    prefix_projection: bool = False
    encoder_hidden_size: int = 128  # width of the projection MLP, when prefix_projection

    peft_type: ClassVar[str] = "PREFIX_TUNING"
    is_prompt_learning: ClassVar[bool] = True
    learning_rate: ClassVar[float] = 3e-3

    def __post_init__(self) -> None:
        require_counts(self, "num_virtual_tokens", "encoder_hidden_size")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.num_virtual_tokens", VIRTUAL_TOKENS)
        trial.suggest_categorical("peft.prefix_projection", [False, True])

    def peft_config(self, model, tokenizer_path):
        from peft import PrefixTuningConfig, TaskType

        return PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=self.num_virtual_tokens,
            prefix_projection=self.prefix_projection,
            encoder_hidden_size=self.encoder_hidden_size,
        )
