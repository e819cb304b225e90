"""HiRA: each base weight multiplied element-wise by a trained low-rank product, a high-rank
update (peft.HiraConfig, Huang et al. 2025)."""

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
class Hira(LayerMethod):
    method: str = method_name("hira")
    r: int = key(32, "Rank of the low-rank product that multiplies each weight.")
    hira_dropout: float = key(0.0, "Dropout on the layer's input while training, in [0, 1).")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "HIRA"
    config_class: ClassVar[str] = "HiraConfig"
    # Of 1.5e-3, 4.5e-3, 0.013, the lowest held-out loss (2.353) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 4.5e-3

    def __post_init__(self) -> None:
        require_counts(self, "r")
        require_fractions(self, "hira_dropout")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
