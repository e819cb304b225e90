"""C3A: each weight update a block-circulant matrix, applied by FFT circular convolutions of
trained kernels (peft.C3AConfig, Chen et al. 2024): a high-rank update at LoRA's cost."""

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
)

INITS = ("xavier_uniform", "kaiming_uniform", "gaussian")


@register
@dataclass
class C3A(LayerMethod):
    method: str = method_name("c3a")
    block_size: int = key(
        64,
        "Side of each circulant block, dividing every adapted layer's input and output sizes; "
        "larger, fewer parameters. Not peft's 256, which divides neither SmolLM2's 576 nor "
        "Qwen2.5-0.5B's 896.",
    )
    init_weights: str = key("xavier_uniform", f"How the kernels start: one of {', '.join(INITS)}.")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "C3A"
    config_class: ClassVar[str] = "C3AConfig"
    # Of 0.033, 0.1, 0.3, the lowest held-out loss (2.364) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 0.1

    def __post_init__(self) -> None:
        require_counts(self, "block_size")
        init = self.init_weights
        require(init in INITS, "peft.init_weights", init, f"one of {', '.join(INITS)}")

    @classmethod
    def suggest(cls, trial):
        # Divisors of every linear layer's sizes in SmolLM2-135M, Qwen2.5-0.5B and bloomz-560m.
        trial.suggest_categorical("peft.block_size", [16, 32, 64])
