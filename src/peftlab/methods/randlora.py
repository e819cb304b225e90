"""RandLoRA: trained diagonal scalings of frozen random low-rank bases that together span the
full rank (peft.RandLoraConfig, Albert et al. 2025): a full-rank update, few parameters."""

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
class RandLoRA(LayerMethod):
    method: str = method_name("randlora")
    r: int = key(
        32,
        "Rank of each random basis; a layer gets min(in, out) / r bases, so a smaller r trains "
        "more parameters.",
    )
    randlora_alpha: int = key(640, "Scale of the update: randlora_alpha / r (typically 20 r).")
    randlora_dropout: float = key(0.0, "Dropout on the update's input while training, in [0, 1).")
    sparse: bool = key(False, "Ternary sparse bases (2/3 zeros): less overfitting, as fast.")
    very_sparse: bool = key(
        False, "Sparser still (1 - 2/sqrt(min(in, out)) zeros); risks accuracy."
    )
    # Not peft's true: with the bases, an adapter of SmolLM2-135M at r 32 took 2.0 GB on disk
    # (BENCHMARKS, "Every method") for 1.7M trained parameters.
    save_projection: bool = key(
        False,
        "Save the random bases with the adapter; false: they are drawn again from their seed "
        "when it is loaded (the same on the same torch): 6.9 MB, not 2.0 GB, for SmolLM2-135M.",
    )
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "RANDLORA"
    config_class: ClassVar[str] = "RandLoraConfig"
    # Of 5.7e-5, 1.7e-4, 5e-4, 1.5e-3, the lowest held-out loss (2.401) on the reference CSV as a
    # task: BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 1.7e-4

    def __post_init__(self) -> None:
        require_counts(self, "r")
        require(self.randlora_alpha > 0, "peft.randlora_alpha", self.randlora_alpha, "> 0")
        require_fractions(self, "randlora_dropout")
        both = self.sparse and self.very_sparse
        require(not both, "peft.sparse", self.sparse, "false with peft.very_sparse=true")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
