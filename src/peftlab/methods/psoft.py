"""PSOFT: an r x r orthogonal transform trained inside each weight's principal subspace, between
frozen SVD factors (peft.PsoftConfig, Wu et al. 2026)."""

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

SVD_INITS = ("psoft_init", "pissa_init")
SVDS = ("full", "lowrank")


@register
@dataclass
class Psoft(LayerMethod):
    method: str = method_name("psoft")
    r: int = key(32, "Rank of the principal subspace, at most each adapted layer's smaller side.")
    psoft_alpha: int = key(32, "Scale of the update: psoft_alpha / r (the paper's is r).")
    psoft_dropout: float = key(0.0, "Dropout on the update's input while training, in [0, 1).")
    ab_svd_init: str = key(
        "psoft_init",
        "The frozen factors: psoft_init (SVD, row-orthogonal A) or pissa_init (PiSSA's split).",
    )
    psoft_svd: str = key(
        "full", "The SVD at init: full, or lowrank (torch.svd_lowrank: faster on large layers)."
    )
    psoft_orth: bool = key(True, "Keep the transform orthogonal (Cayley); false: a free matrix.")
    psoft_mag_a: bool = key(True, "Train a scaling vector on the transform's input side.")
    psoft_mag_b: bool = key(True, "Train a scaling vector on the transform's output side.")
    use_cayley_neumann: bool = key(
        False, "Approximate the Cayley transform by a Neumann series: faster at large r."
    )
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "PSOFT"
    config_class: ClassVar[str] = "PsoftConfig"
    # Of 1.7e-4, 5e-4, 1.5e-3, the lowest held-out loss (2.385) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 5e-4

    def __post_init__(self) -> None:
        require_counts(self, "r")
        require(self.psoft_alpha > 0, "peft.psoft_alpha", self.psoft_alpha, "> 0")
        require_fractions(self, "psoft_dropout")
        require(
            self.ab_svd_init in SVD_INITS,
            "peft.ab_svd_init",
            self.ab_svd_init,
            " or ".join(SVD_INITS),
        )
        require(self.psoft_svd in SVDS, "peft.psoft_svd", self.psoft_svd, " or ".join(SVDS))

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
