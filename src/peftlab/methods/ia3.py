"""IA3: trainable vectors that rescale the keys, values and feed-forward activations of the
base model's layers (peft.IA3Config, Liu et al. 2022): the fewest trained parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from peftlab.errors import require
from peftlab.methods.base import PeftMethod, method_name, register, target_modules


@register
@dataclass
class IA3(PeftMethod):
    method: str = method_name("ia3")
    target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "The layers whose activations are rescaled; null: peft's per-architecture "
            "defaults (Llama: k_proj, v_proj, down_proj; BLOOM: query_key_value, "
            "mlp.dense_4h_to_h)."
        },
    )
    feedforward_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Those of target_modules that are feed-forward layers (their inputs are "
            "scaled, not their outputs): a subset of target_modules; null when it is null."
        },
    )

    peft_type: ClassVar[str] = "IA3"
    is_prompt_learning: ClassVar[bool] = False
    # Of 1e-3, 3e-3, 9e-3, 0.027, the lowest held-out loss (2.384) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 9e-3

    def __post_init__(self) -> None:
        require(
            self.feedforward_modules is None or self.target_modules is not None,
            "peft.feedforward_modules",
            self.feedforward_modules,
            "null while peft.target_modules is null (both take the architecture's defaults)",
        )
        require(
            set(self.feedforward_modules or ()) <= set(self.target_modules or ()),
            "peft.feedforward_modules",
            self.feedforward_modules,
            f"a subset of peft.target_modules={self.target_modules}",
        )

    @classmethod
    def suggest(cls, trial):
        """IA3 has no size to choose: a search tunes its learning rate alone."""

    def peft_config(self, model, tokenizer_path):
        from peft import IA3Config, TaskType
        from peft.utils import (
            TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
        )
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

        modules = target_modules(self.target_modules, model, TARGETS, "peft.target_modules")
        if self.target_modules is None:
            feedforward = FEEDFORWARD[model.config.model_type]
        else:
            feedforward = self.feedforward_modules or []
        return IA3Config(
            task_type=TaskType.CAUSAL_LM,
            target_modules=modules,
            feedforward_modules=feedforward,
        )
