"""TinyLoRA: each update built from the weight's frozen top singular vectors and fixed random
matrices, weighted by a tiny trained vector (peft.TinyLoraConfig, arXiv 2602.04118, 2026)."""

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
class TinyLora(LayerMethod):
    method: str = method_name("tinylora")
    r: int = key(2, "Rank of the frozen SVD each update lives in (the paper's 2). Not LoRA's rank.")
    u: int = key(64, "Trained values of each vector (one a layer, or a group of tied layers).")
    weight_tying: float = key(
        0.0, "Share of the layers that share one vector, in [0, 1]: 0 none, 1 all."
    )
    tinylora_dropout: float = key(0.0, "Dropout on the layer's input while training, in [0, 1).")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "TINYLORA"
    config_class: ClassVar[str] = "TinyLoraConfig"
    # Of 3.3e-4, 1e-3, 3e-3, the lowest held-out loss (2.596) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 1e-3

    def __post_init__(self) -> None:
        require_counts(self, "r", "u")
        require(0 <= self.weight_tying <= 1, "peft.weight_tying", self.weight_tying, "in [0, 1]")
        require_fractions(self, "tinylora_dropout")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.u", [16, 64, 256])
