"""Super-Tuning: only the largest-magnitude entries of each base weight train, optionally with a
LoRA beside them (peft.SupertuningConfig, Ilin et al. 2026)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftlab.methods.base import (
    LayerMethod,
    adapted_layers,
    key,
    method_name,
    register,
    require,
    require_fractions,
)


@register
@dataclass
class Supertuning(LayerMethod):
    method: str = method_name("supertuning")
    sparsity: float = key(
        0.99, "Share of each weight's entries kept frozen, in [0, 1): 0.99 trains 1% of them."
    )
    select_top: bool = key(True, "Train the largest-magnitude entries; false: the smallest.")
    r: int | None = key(None, "Rank of a LoRA trained beside the entries (Supra); null: none.")
    lora_alpha: float | None = key(
        None, "Scale of that LoRA: lora_alpha / r; null: 2 r. Set only with r."
    )
    lora_dropout: float = key(0.0, "Dropout on that LoRA's input while training, in [0, 1).")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "SUPERTUNING"
    config_class: ClassVar[str] = "SupertuningConfig"
    # Of 3.3e-5, 1e-4, 3e-4, 9e-4, the lowest held-out loss (2.527, the highest tried) on the
    # reference CSV as a task: BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 9e-4

    def __post_init__(self) -> None:
        require_fractions(self, "sparsity")
        require(self.r is None or self.r >= 1, "peft.r", self.r, "null or an integer >= 1")
        require(
            self.lora_alpha is None or (self.r is not None and self.lora_alpha > 0),
            "peft.lora_alpha",
            self.lora_alpha,
            "null, or > 0 with peft.r set",
        )
        require_fractions(self, "lora_dropout")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.sparsity", [0.98, 0.99, 0.995])
