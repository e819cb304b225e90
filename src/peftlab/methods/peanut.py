"""PEANuT: a small trained network that reads each base weight and writes its update
(peft.PeanutConfig, Zhong et al. 2025)."""

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

# Activations of transformers' ACT2FN that peft takes, named here so a config validates
# without loading torch.
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid")


@register
@dataclass
class Peanut(LayerMethod):
    method: str = method_name("peanut")
    r: int = key(32, "Hidden width of the network that writes each update.")
    depth: int = key(0, "Hidden layers of the network on each side, besides its input and output.")
    act_fn: str = key("relu", f"The network's activation: {', '.join(ACTIVATIONS)}.")
    scaling: float = key(1.0, "Multiplier of the update, > 0.")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "PEANUT"
    config_class: ClassVar[str] = "PeanutConfig"
    # Of 3.3e-5, 1e-4, 3e-4, the lowest held-out loss (2.397) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 1e-4

    def __post_init__(self) -> None:
        require_counts(self, "r")
        require(self.depth >= 0, "peft.depth", self.depth, "an integer >= 0")
        require(self.act_fn in ACTIVATIONS, "peft.act_fn", self.act_fn, ", ".join(ACTIVATIONS))
        require(self.scaling > 0, "peft.scaling", self.scaling, "> 0")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.r", [4, 8, 16, 32])
