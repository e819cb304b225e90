"""Uni-LoRA: every LoRA entry of every layer read from one shared trained vector through a
fixed random isometric projection (peft.UniLoraConfig, Li et al. 2025)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftlab.methods.base import (
    LayerMethod,
    adapted_layers,
    key,
    method_name,
    register,
    require_counts,
    require_fractions,
)


@register
@dataclass
class UniLora(LayerMethod):
    method: str = method_name("unilora")
    r: int = key(4, "Rank of the LoRA updates read from the shared vector.")
    theta_d_length: int = key(
        256, "Length of the one trained vector: all the method trains, for the whole model."
    )
    unilora_dropout: float = key(0.0, "Dropout on the layer's input while training, in [0, 1).")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "UNILORA"
    config_class: ClassVar[str] = "UniLoraConfig"
    # Of 6.7e-4, 2e-3, 6e-3, the lowest held-out loss (2.708) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 2e-3

    def __post_init__(self) -> None:
        require_counts(self, "r", "theta_d_length")
        require_fractions(self, "unilora_dropout")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
        trial.suggest_categorical("peft.theta_d_length", [256, 4096, 65536])
