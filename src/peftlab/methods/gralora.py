"""GraLoRA: each weight split into k x k blocks, each with its own low-rank update of rank
r / k (peft.GraloraConfig, Jung et al. 2025): LoRA's parameters, k times its rank."""

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
    require_counts,
    require_fractions,
)


@register
@dataclass
class GraLoRA(LayerMethod):
    method: str = method_name("gralora")
    r: int = key(32, "Total rank of each layer's update: a multiple of gralora_k.")
    alpha: int = key(64, "Scale of the update: alpha / (r + hybrid_r).")
    gralora_dropout: float = key(0.0, "Dropout on the update's input while training, in [0, 1).")
    gralora_k: int = key(
        2,
        "Blocks per side, dividing every adapted layer's sizes: 2 advised up to r = 32, 4 from "
        "r = 64.",
    )
    hybrid_r: int = key(0, "Rank of a plain LoRA update added alongside (>= 0; 0: none).")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "GRALORA"
    config_class: ClassVar[str] = "GraloraConfig"
    # Of 1.1e-4, 3.3e-4, 1e-3, 3e-3, the lowest held-out loss (2.349) on the reference CSV as a
    # task: BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 3.3e-4

    def __post_init__(self) -> None:
        require_counts(self, "r", "gralora_k")
        multiple = f"a multiple of peft.gralora_k={self.gralora_k}"
        require(self.r % self.gralora_k == 0, "peft.r", self.r, multiple)
        require(self.hybrid_r >= 0, "peft.hybrid_r", self.hybrid_r, "an integer >= 0")
        require_fractions(self, "gralora_dropout")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
