"""LoHa: each weight update the Hadamard product of two low-rank products (peft.LoHaConfig,
Hyeon-Woo et al. 2022, FedPara): a higher effective rank than LoRA for the same parameters."""

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
class LoHa(LayerMethod):
    method: str = method_name("loha")
    r: int = key(8, "Rank of each of the two low-rank products.")
    alpha: int = key(8, "Scale of the update: alpha / r.")
    rank_dropout: float = key(0.0, "Dropout on the update's ranks while training, in [0, 1).")
    module_dropout: float = key(0.0, "Chance of skipping a layer's update while training.")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "LOHA"
    config_class: ClassVar[str] = "LoHaConfig"
    # Of 1.7e-4, 5e-4, 1.5e-3, 4.5e-3, the lowest held-out loss (2.418, the highest tried) on the
    # reference CSV as a task: BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 4.5e-3

    def __post_init__(self) -> None:
        require_counts(self, "r")
        require_fractions(self, "rank_dropout", "module_dropout")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
