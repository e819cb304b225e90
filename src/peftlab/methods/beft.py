"""BEFT: a trained bias added to the output of each value projection, all else frozen
(peft.BeftConfig, Huang et al. 2026)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftlab.methods.base import LayerMethod, key, method_name, register, target_modules

# BLOOM fuses the value projection into query_key_value (absent from peft's table): its bias
# shifts queries and keys too.
FUSED_VALUES = {"bloom": ["query_key_value"]}


@register
@dataclass
class Beft(LayerMethod):
    method: str = method_name("beft")
    target_modules: list[str] | None = key(
        None,
        "The layers whose outputs get a trained bias: null the value projections (Llama's "
        "v_proj, BLOOM's fused query_key_value); [all-linear] every linear layer but the LM "
        "head; or a list of module names.",
    )

    peft_type: ClassVar[str] = "BEFT"
    config_class: ClassVar[str] = "BeftConfig"
    # Of 2.7e-3, 8e-3, 0.024, the lowest held-out loss (2.470) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 8e-3

    @classmethod
    def suggest(cls, trial):
        """BEFT has no size to choose: a search tunes its learning rate alone."""

    def peft_config(self, model, tokenizer_path):
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_BEFT_TARGET_MODULES_MAPPING

        config = super().peft_config(model, tokenizer_path)
        defaults = {**TRANSFORMERS_MODELS_TO_BEFT_TARGET_MODULES_MAPPING, **FUSED_VALUES}
        config.target_modules = target_modules(
            self.target_modules, model, defaults, "peft.target_modules"
        )
        return config
