"""BOFT: an orthogonal rotation of each layer's input made of butterfly-factored blocks
(peft.BOFTConfig, Liu et al. 2024): OFT's rotations, denser for the same parameters."""

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
from peftlab.methods.oft import require_blocks


@register
@dataclass
class BOFT(LayerMethod):
    method: str = method_name("boft")
    boft_block_size: int = key(
        4,
        "Side of each rotation block, dividing every adapted layer's input size, or 0 to "
        "count them by boft_block_num (set one of the two).",
    )
    boft_block_num: int = key(0, "Blocks per layer, or 0 to size them by boft_block_size.")
    boft_n_butterfly_factor: int = key(
        1,
        "Butterfly factors (>= 1; 1 is OFT): each doubles a block's reach. Needs peft's CUDA "
        "kernel, built with ninja at first use; without it peft uses 1.",
    )
    boft_dropout: float = key(
        0.0, "Chance of a block being left unrotated while training, in [0, 1)."
    )
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "BOFT"
    config_class: ClassVar[str] = "BOFTConfig"
    # Of 3.3e-4, 1e-3, 3e-3, the lowest held-out loss (2.346) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 1e-3

    def __post_init__(self) -> None:
        require_blocks(self, "boft_block_num", "boft_block_size")
        require_counts(self, "boft_n_butterfly_factor")
        require_fractions(self, "boft_dropout")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.boft_block_size", [4, 8, 16])
