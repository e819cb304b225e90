"""LoRA: trainable low-rank updates beside the base model's linear layers (peft.LoraConfig,
Hu et al. 2021), with rsLoRA scaling and DoRA as options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from peftlab.methods.base import (
    ALL_LINEAR,
    PeftMethod,
    register,
    require,
    require_counts,
    target_modules,
)


@register
@dataclass
class Lora(PeftMethod):
    """``target_modules: all-linear`` adapts every linear layer but the LM head, whatever the
    architecture (Llama's q/k/v/o/gate/up/down_proj, BLOOM's query_key_value/dense/...);
    null takes peft's per-architecture attention defaults; a list names modules."""

    method: str = "lora"
    r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | None = field(default_factory=lambda: [ALL_LINEAR])
    use_rslora: bool = False
    use_dora: bool = False

    peft_type: ClassVar[str] = "LORA"
    is_prompt_learning: ClassVar[bool] = False
    learning_rate: ClassVar[float] = 5e-4

    def __post_init__(self) -> None:
        require_counts(self, "r")
        require(self.lora_alpha > 0, "peft.lora_alpha", self.lora_alpha, "> 0")
        require(0 <= self.lora_dropout < 1, "peft.lora_dropout", self.lora_dropout, "in [0, 1)")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
        trial.suggest_categorical("peft.lora_alpha", [8, 16, 32])
        trial.suggest_categorical("peft.lora_dropout", [0.0, 0.05, 0.1])

    def peft_config(self, model, tokenizer_path):
        from peft import LoraConfig, TaskType
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=target_modules(
                self.target_modules, model, DEFAULTS, "peft.target_modules"
            ),
            use_rslora=self.use_rslora,
            use_dora=self.use_dora,
        )
