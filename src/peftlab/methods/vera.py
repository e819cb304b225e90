"""VeRA: trained scaling vectors around one pair of frozen random low-rank matrices shared by
every layer (peft.VeraConfig, Kopiczko et al. 2024): a tenth of LoRA's parameters or less."""

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
class VeRA(LayerMethod):
    method: str = method_name("vera")
    r: int = key(256, "Rank of the shared random matrices: larger than LoRA's, e.g. 256-1024.")
    vera_dropout: float = key(0.0, "Dropout on the update's input while training, in [0, 1).")
    d_initial: float = key(0.1, "Start of the rank-side scaling vector (> 0; <= 0.1 advised).")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "VERA"
    config_class: ClassVar[str] = "VeraConfig"
    # Of 1.7e-3, 5e-3, 0.015, 0.045, the lowest held-out loss (2.355, the highest tried) on the
    # reference CSV as a task: BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 0.045

    def __post_init__(self) -> None:
        require_counts(self, "r")
        require_fractions(self, "vera_dropout")
        # The other vector starts at 0: with both at 0 neither gets a gradient.
        require(self.d_initial > 0, "peft.d_initial", self.d_initial, "> 0")

    @classmethod
    def suggest(cls, trial):
        """VeRA's r is of another scale than the peft.r other methods search ([4, 8, 16, 32]:
        one distribution a name): a search tunes its learning rate alone."""
