"""HRA: each layer's weight times a chain of trained Householder reflections
(peft.HRAConfig, Yuan et al. 2024): an orthogonal update of low rank.

peft's apply_GS (Gram-Schmidt on the reflections) is left out: on the paired start that makes
the chain the identity it yields rounding noise as a direction, so the adapted model no longer
starts as the base model (peft 0.21)."""

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
)


@register
@dataclass
class HRA(LayerMethod):
    method: str = method_name("hra")
    r: int = key(
        8,
        "Householder reflections per layer: an even integer >= 2 (peft starts them in equal "
        "pairs, whose product is the identity).",
    )
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "HRA"
    config_class: ClassVar[str] = "HRAConfig"
    # Of 3.3e-4, 1e-3, 3e-3, the lowest held-out loss (2.371) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 1e-3

    def __post_init__(self) -> None:
        require(self.r >= 2 and self.r % 2 == 0, "peft.r", self.r, "an even integer >= 2")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
