"""MiSS: one trained r x out matrix per layer, shared by every r-wide shard of the input
(peft.MissConfig, Kang et al. 2024): LoRA-like quality with fewer operations."""

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

VARIANTS = ("balance", "bat", "mini")


@register
@dataclass
class MiSS(LayerMethod):
    method: str = method_name("miss")
    r: int = key(64, "Shard width: at most every adapted layer's input size.")
    miss_dropout: float = key(0.0, "Dropout on the update's input while training, in [0, 1).")
    init_weights: str = key(
        "balance",
        "Variant: balance (peft's default), bat (nonlinear updates across shards, built from the "
        "weight; r must divide every adapted layer's sizes) or mini (an r x mini_r block "
        "repeated along the output: fewer parameters).",
    )
    mini_r: int = key(1, "With mini: width of the trained matrix, dividing every output size.")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "MISS"
    config_class: ClassVar[str] = "MissConfig"
    # Of 5.7e-5, 1.7e-4, 5e-4, 1.5e-3, the lowest held-out loss (2.349) on the reference CSV as a
    # task: BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 1.7e-4

    def __post_init__(self) -> None:
        require_counts(self, "r", "mini_r")
        require_fractions(self, "miss_dropout")
        variant = self.init_weights
        require(variant in VARIANTS, "peft.init_weights", variant, f"one of {', '.join(VARIANTS)}")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])

    def peft_config(self, model, tokenizer_path):
        config = super().peft_config(model, tokenizer_path)
        # peft names the default variant True and the others by name: one string key here.
        if self.init_weights == "balance":
            config.init_weights = True
        return config
