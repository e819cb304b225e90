"""RoAd: a trained 2D rotation and scaling of each pair of a layer's output features
(peft.RoadConfig, Liao et al. 2024): the fewest parameters of the rotation methods."""

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

VARIANTS = ("road_1", "road_2", "road_4")


@register
@dataclass
class RoAd(LayerMethod):
    method: str = method_name("road")
    variant: str = key(
        "road_1",
        "Angles and scales per layer: road_1 one of each per pair of output features, road_2 "
        "one per feature (2x), road_4 two per feature (4x).",
    )
    group_size: int = key(
        64,
        "Features paired within groups of this size (even, dividing every adapted layer's "
        "output size): no effect on accuracy, 64 fast for inference.",
    )
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "ROAD"
    config_class: ClassVar[str] = "RoadConfig"
    # Of 1e-3, 3e-3, 9e-3, the lowest held-out loss (2.363) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 3e-3

    def __post_init__(self) -> None:
        variant = self.variant
        require(variant in VARIANTS, "peft.variant", variant, f"one of {', '.join(VARIANTS)}")
        size = self.group_size
        require(size >= 2 and size % 2 == 0, "peft.group_size", size, "an even integer >= 2")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.variant", list(VARIANTS))
