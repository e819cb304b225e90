"""AdaMSS: low-rank updates in several subspaces that SVD and clustering carve out of each base
weight (peft.AdamssConfig, Zheng et al. 2025)."""

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
class Adamss(LayerMethod):
    method: str = method_name("adamss")
    r: int = key(
        100,
        "Singular directions of each weight that are clustered into subspaces (at most the "
        "weight's smaller side: a larger r is cut to it). Not LoRA's rank.",
    )
    num_subspaces: int = key(5, "Subspaces the directions are clustered into, each updated.")
    subspace_rank: int = key(1, "Rank of each subspace's update.")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "ADAMSS"
    config_class: ClassVar[str] = "AdamssConfig"
    # Of 3.3e-4, 1e-3, 3e-3, 9e-3, the lowest held-out loss (2.388, the highest tried) on the
    # reference CSV as a task: BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 9e-3

    def __post_init__(self) -> None:
        require_counts(self, "r", "num_subspaces", "subspace_rank")

    @classmethod
    def suggest(cls, trial):
        # r is a count of singular directions, not LoRA's rank: it stays out of peft.r's choices.
        trial.suggest_categorical("peft.num_subspaces", [3, 5, 10])
        trial.suggest_categorical("peft.subspace_rank", [1, 2, 4])
