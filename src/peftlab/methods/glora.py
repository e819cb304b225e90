"""GLoRA: a generalised LoRA that scales and shifts each weight and bias through low-rank,
vector or scalar paths (peft.GloraConfig, Chavan et al. 2023)."""

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

# The parameterizations each path allows (peft's checks, here before torch loads).
PATHS = {
    "config_A_B": ("lora", "vector", "constant", "none"),
    "config_C": ("lora", "vector", "none"),
    "config_D_E": ("vector", "constant", "none"),
}


@register
@dataclass
class Glora(LayerMethod):
    method: str = method_name("glora")
    r: int = key(8, "Rank of the paths set to lora.")
    config_A_B: str = key(
        "lora", "The weight's scale and shift (W + W A + B): lora, vector, constant or none."
    )
    config_C: str = key("lora", "The weight's term in the bias (b + W C): lora, vector or none.")
    config_D_E: str = key(
        "constant", "The bias's scale and shift (b + b D + E): vector, constant or none."
    )
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "GLORA"
    config_class: ClassVar[str] = "GloraConfig"
    # Of 1e-4, 3e-4, 9e-4, 2.7e-3, the lowest held-out loss (2.392) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 9e-4

    def __post_init__(self) -> None:
        require_counts(self, "r")
        for name, allowed in PATHS.items():
            value = getattr(self, name)
            require(value in allowed, f"peft.{name}", value, ", ".join(allowed))

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
