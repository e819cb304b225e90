"""LoKr: each weight update the Kronecker product of a small full matrix and a low-rank one
(peft.LoKrConfig, Yeh et al. 2023, LyCORIS): a full-rank update from few parameters."""

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
class LoKr(LayerMethod):
    method: str = method_name("lokr")
    r: int = key(8, "Rank of the larger Kronecker factor (a full matrix from r >= half its side).")
    alpha: int = key(8, "Scale of the update: alpha / r.")
    rank_dropout: float = key(0.0, "Dropout on the update's ranks while training, in [0, 1).")
    module_dropout: float = key(
        0.0, "Chance of skipping a layer's update while training, in [0, 1)."
    )
    decompose_both: bool = key(False, "Make the smaller Kronecker factor low-rank (r) too.")
    decompose_factor: int = key(
        -1,
        "Side of the smaller Kronecker factor, at most this divisor of each layer's sizes "
        "(>= 1); -1: near the square root of each size.",
    )
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "LOKR"
    config_class: ClassVar[str] = "LoKrConfig"
    # Of 1e-3, 3e-3, 9e-3, 0.027, the lowest held-out loss (2.366) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 9e-3

    def __post_init__(self) -> None:
        require_counts(self, "r")
        require_fractions(self, "rank_dropout", "module_dropout")
        factor = self.decompose_factor
        require(factor == -1 or factor >= 1, "peft.decompose_factor", factor, "-1 or >= 1")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
