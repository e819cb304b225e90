"""PVeRA: VeRA's frozen random projections shared by every layer, with trained per-layer
vectors that learn a distribution of the update (peft.PveraConfig, arXiv 2512.07703, 2025)."""

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


@register
@dataclass
class Pvera(LayerMethod):
    method: str = method_name("pvera")
    r: int = key(
        256,
        "Rank of the frozen random projections every layer shares: far above LoRA's, as only "
        "2 r + out_features values train per layer.",
    )
    d_initial: float = key(0.1, "Start value of the per-rank vector (<= 0.1 advised).")
    pvera_dropout: float = key(0.0, "Dropout on the layer's input while training, in [0, 1).")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "PVERA"
    config_class: ClassVar[str] = "PveraConfig"
    # Of 1e-3, 3e-3, 9e-3, 0.027, the lowest held-out loss (2.688, the highest tried) on the
    # reference CSV as a task: BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 0.027

    def __post_init__(self) -> None:
        require_counts(self, "r")
        require_fractions(self, "pvera_dropout")

    @classmethod
    def suggest(cls, trial):
        """PVeRA's r is not LoRA's (peft.r's choices would starve it) and barely changes what
        trains (method_comparison: r 64 and 256 alike): a search tunes its learning rate."""
