"""VB-LoRA: every low-rank factor assembled, sub-vector by sub-vector, from a top-k mix of one
shared trained vector bank (peft.VBLoRAConfig, Li et al. 2024): LoRA in a tiny budget."""

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
class VBLoRA(LayerMethod):
    method: str = method_name("vblora")
    r: int = key(4, "Rank of each layer's low-rank factors.")
    num_vectors: int = key(256, "Vectors in the shared bank: more for larger models.")
    vector_length: int = key(
        64,
        "Length of the bank's vectors, dividing every adapted layer's input and output sizes. "
        "Not peft's 256, which divides neither SmolLM2's 576 nor Qwen2.5-0.5B's 896.",
    )
    topk: int = key(2, "Bank vectors mixed into each sub-vector (1 to num_vectors; 2 advised).")
    vblora_dropout: float = key(0.0, "Dropout on the update's input while training, in [0, 1).")
    init_vector_bank_bound: float = key(
        0.02, "The bank starts uniform in +-this (> 0: an all-zero bank gets no gradient)."
    )
    init_logits_std: float = key(0.1, "The mixing logits start from N(0, this^2) (>= 0).")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "VBLORA"
    config_class: ClassVar[str] = "VBLoRAConfig"
    # Of 3.3e-3, 0.01, 0.03, the lowest held-out loss (2.394) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 0.01

    def __post_init__(self) -> None:
        require_counts(self, "r", "num_vectors", "vector_length", "topk")
        at_most = f"at most peft.num_vectors={self.num_vectors}"
        require(self.topk <= self.num_vectors, "peft.topk", self.topk, at_most)
        require_fractions(self, "vblora_dropout")
        bound = self.init_vector_bank_bound
        require(bound > 0, "peft.init_vector_bank_bound", bound, "> 0")
        require(self.init_logits_std >= 0, "peft.init_logits_std", self.init_logits_std, ">= 0")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
        trial.suggest_categorical("peft.num_vectors", [256, 512, 1024])
