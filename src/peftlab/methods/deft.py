"""DEFT: a low-rank subspace of each weight projected out and a trained low-rank injection put
in (peft.DeftConfig, Kumar et al. 2026); PaRa, the removal alone, as an option."""

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

DECOMPOSITIONS = ("relu", "qr")


@register
@dataclass
class Deft(LayerMethod):
    method: str = method_name("deft")
    r: int = key(8, "Rank of the removed subspace and of the injected update.")
    alpha: int | None = key(None, "Scale of the injected update: alpha / r; null: 1.")
    decomposition_method: str = key(
        "relu", "The projector onto the subspace: relu (P relu(P)^T) or qr (orthogonal)."
    )
    para: bool = key(
        False, "PaRa: remove the subspace, inject nothing (then training cannot start as the base)."
    )
    deft_dropout: float = key(0.0, "Dropout on the layer's input while training, in [0, 1).")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "DEFT"
    config_class: ClassVar[str] = "DeftConfig"
    # Of 1e-4, 3e-4, 9e-4, 2.7e-3, the lowest held-out loss (2.412) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 9e-4

    def __post_init__(self) -> None:
        require_counts(self, "r")
        require(self.alpha is None or self.alpha > 0, "peft.alpha", self.alpha, "null or > 0")
        require(
            self.decomposition_method in DECOMPOSITIONS,
            "peft.decomposition_method",
            self.decomposition_method,
            " or ".join(DECOMPOSITIONS),
        )
        require_fractions(self, "deft_dropout")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
