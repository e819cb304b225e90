"""FRoD: full-rank updates from a basis shared by each kind of layer, turned by sparse trained
rotations (peft.FrodConfig, AAAI 2026, "Full-Rank Efficient Fine-Tuning with Rotational
Degrees")."""

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
class Frod(LayerMethod):
    method: str = method_name("frod")
    sparse_rate: float = key(
        0.01, "Share of each rotation's off-diagonal entries that train, in [0, 1]."
    )
    frod_dropout: float = key(0.0, "Dropout on the layer's input while training, in [0, 1).")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "FROD"
    config_class: ClassVar[str] = "FrodConfig"
    # Of 3.3e-5, 1e-4, 3e-4, the lowest held-out loss (2.356) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 1e-4

    def __post_init__(self) -> None:
        require(0 <= self.sparse_rate <= 1, "peft.sparse_rate", self.sparse_rate, "in [0, 1]")
        require_fractions(self, "frod_dropout")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.sparse_rate", [0.005, 0.01, 0.02])

    def peft_config(self, model, tokenizer_path):
        config = super().peft_config(model, tokenizer_path)
        config.progressbar = False  # its tqdm bar would land in every run's log
        return config
