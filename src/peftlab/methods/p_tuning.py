"""P-tuning: virtual tokens produced by a small trainable encoder (MLP or LSTM) over their
embeddings, prepended to every input (peft.PromptEncoderConfig, Liu et al. 2021)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from peftlab.methods.base import (
    VIRTUAL_TOKENS,
    PeftMethod,
    method_name,
    register,
    require_counts,
)


class EncoderType(str, Enum):
    """peft.PromptEncoderReparameterizationType, mirrored (no peft import to validate)."""

    MLP = "MLP"
    LSTM = "LSTM"


@register
@dataclass
class PTuning(PeftMethod):
    method: str = method_name("p_tuning")
    num_virtual_tokens: int = field(
        default=20, metadata={"help": "Virtual tokens the encoder makes, put before every input."}
    )
    encoder_reparameterization_type: EncoderType = field(
        default=EncoderType.MLP,
        metadata={"help": "The trained encoder that makes the tokens from their embeddings."},
    )
    encoder_hidden_size: int = field(
        default=128, metadata={"help": "Width of the encoder's hidden layer."}
    )

    peft_type: ClassVar[str] = "P_TUNING"
    is_prompt_learning: ClassVar[bool] = True
    # Of 3.3e-4, 1e-3, 3e-3, 9e-3, the lowest held-out loss (2.561) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 3e-3

    def __post_init__(self) -> None:
        require_counts(self, "num_virtual_tokens", "encoder_hidden_size")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.num_virtual_tokens", VIRTUAL_TOKENS)
        trial.suggest_categorical(
            "peft.encoder_reparameterization_type", [t.value for t in EncoderType]
        )
        trial.suggest_categorical("peft.encoder_hidden_size", [64, 128, 256])

    def peft_config(self, model, tokenizer_path):
        from peft import PromptEncoderConfig, TaskType

        return PromptEncoderConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=self.num_virtual_tokens,
            encoder_reparameterization_type=self.encoder_reparameterization_type.value,
            encoder_hidden_size=self.encoder_hidden_size,
        )
