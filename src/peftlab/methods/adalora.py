"""AdaLoRA: LoRA updates in SVD form whose ranks are reallocated while training, from the
layers that matter least to those that matter most (peft.AdaLoraConfig, Zhang et al. 2023)."""

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
    target_modules,
)


@register
@dataclass
class AdaLora(LayerMethod):
    method: str = method_name("adalora")
    init_r: int = key(12, "Rank each update starts with, before ranks are reallocated.")
    target_r: int = key(8, "Average rank per update that the reallocation ends with (<= init_r).")
    lora_alpha: int = key(16, "Scale of the updates: lora_alpha / r.")
    lora_dropout: float = key(0.05, "Dropout on the updates' input while training, in [0, 1).")
    tinit_fraction: float = key(
        0.1,
        "Share of the run's optimizer steps trained at init_r before ranks are cut (peft's "
        "tinit, in steps, is set from it when training starts).",
    )
    tfinal_fraction: float = key(
        0.2,
        "Share of the run's optimizer steps trained at the final ranks (peft's tfinal); > 0, "
        "or the final allocation is never fixed.",
    )
    orth_reg_weight: float = key(0.5, "Weight of the orthogonality penalty on the SVD factors.")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "ADALORA"
    config_class: ClassVar[str] = "AdaLoraConfig"
    # Of 1.7e-4, 5e-4, 1.5e-3, 4.5e-3, the lowest held-out loss (2.634, the highest tried) on the
    # reference CSV as a task: BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 4.5e-3

    def __post_init__(self) -> None:
        require_counts(self, "init_r", "target_r")
        require(self.target_r <= self.init_r, "peft.target_r", self.target_r, f"<= {self.init_r}")
        require_fractions(self, "lora_dropout")
        require(
            self.tinit_fraction >= 0 and self.tfinal_fraction > 0
            and self.tinit_fraction + self.tfinal_fraction < 1,
            "peft.tfinal_fraction",
            self.tfinal_fraction,
            f"> 0, and with peft.tinit_fraction={self.tinit_fraction} below 1",
        )  # fmt: skip

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.init_r", [8, 12, 16])
        trial.suggest_categorical("peft.target_r", [4, 8])

    def peft_config(self, model, tokenizer_path):
        from peft import AdaLoraConfig, TaskType

        # total_step, tinit and tfinal count optimizer steps, which only the Trainer knows:
        # set when training starts (RankBudget). A placeholder till then: peft requires one.
        return AdaLoraConfig(
            task_type=TaskType.CAUSAL_LM,
            init_r=self.init_r,
            target_r=self.target_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            orth_reg_weight=self.orth_reg_weight,
            target_modules=target_modules(self.target_modules, model, None, "peft.target_modules"),
            total_step=1,
        )

    def trainer_callbacks(self, peft_model):
        # transformers is imported here, not at the top: a config composes without torch.
        from transformers import TrainerCallback

        method = self

        class RankBudget(TrainerCallback):
            """Sets the budget's schedule from the run's steps, and reallocates the ranks after
            every optimizer step (peft's update_and_allocate): without it AdaLoRA trains as a
            LoRA of rank init_r."""

            def on_train_begin(self, args, state, control, **kwargs):
                config = peft_model.peft_config[peft_model.active_adapter]
                steps = config.total_step = state.max_steps
                config.tinit = int(method.tinit_fraction * steps)
                # The final allocation needs a step's importance scores before it: none in a
                # run too short to have one (its ranks stay init_r).
                config.tfinal = min(
                    max(1, int(method.tfinal_fraction * steps)), max(0, steps - config.tinit - 1)
                )

            def on_optimizer_step(self, args, state, control, **kwargs):
                peft_model.base_model.update_and_allocate(state.global_step)

        return [RankBudget()]
