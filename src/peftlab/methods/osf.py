"""OSF: each weight's top singular directions frozen and the others fine-tuned, their gradients
kept orthogonal to the frozen ones (peft.OSFConfig, Nayak et al. 2025)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftlab.methods.base import LayerMethod, adapted_layers, key, method_name, register, require


@register
@dataclass
class OSF(LayerMethod):
    method: str = method_name("osf")
    effective_rank: float | None = key(
        None,
        "Share of each weight's singular directions kept frozen (the largest), in (0, 1); the "
        "others train. null: half.",
    )
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "OSF"
    config_class: ClassVar[str] = "OSFConfig"
    # Of 5.7e-6, 1.7e-5, 5e-5, 1.5e-4, the lowest held-out loss (2.342) on the reference CSV as a
    # task: BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 1.7e-5

    def __post_init__(self) -> None:
        # peft also takes absolute ranks (> 1): a share fits every layer of every model.
        require(
            self.effective_rank is None or 0 < self.effective_rank < 1,
            "peft.effective_rank",
            self.effective_rank,
            "null or in (0, 1)",
        )

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.effective_rank", [0.25, 0.5, 0.75])
