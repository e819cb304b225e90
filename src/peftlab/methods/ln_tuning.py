"""LN tuning: the base model's normalization layers (their scales and shifts) are trained and
nothing else (peft.LNTuningConfig, Zhao et al. 2023): the fewest trained parameters of all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from peftlab.methods.base import LayerMethod, method_name, register


@register
@dataclass
class LNTuning(LayerMethod):
    method: str = method_name("ln_tuning")
    target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "The normalization layers to train: null peft's per-architecture defaults "
            "(every layer norm: Llama's input/post_attention_layernorm and norm; BLOOM's), or "
            "a list of module names."
        },
    )

    peft_type: ClassVar[str] = "LN_TUNING"
    config_class: ClassVar[str] = "LNTuningConfig"
    # Of 1e-3, 3e-3, 9e-3, the lowest held-out loss (2.420) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 3e-3

    @classmethod
    def suggest(cls, trial):
        """LN tuning has no size to choose: a search tunes its learning rate alone."""
