"""SHiRA: trains a random sparse subset of each layer's weights, as many as a LoRA of rank r
would have (peft.ShiraConfig, Bhardwaj et al. 2024): a sparse, high-rank update."""

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
)


@register
@dataclass
class SHiRA(LayerMethod):
    method: str = method_name("shira")
    r: int = key(
        32,
        "Trained weights per layer: r x (in + out features), as a LoRA of rank r, at most the "
        "layer's in x out (the rank is not limited).",
    )
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "SHIRA"
    config_class: ClassVar[str] = "ShiraConfig"
    # Of 1.7e-4, 5e-4, 1.5e-3, 4.5e-3, the lowest held-out loss (2.338) on the reference CSV as a
    # task: BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 5e-4

    def __post_init__(self) -> None:
        require_counts(self, "r")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
