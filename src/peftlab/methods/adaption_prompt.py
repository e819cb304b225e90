"""Adaption prompt (LLaMA-Adapter): trained prompt tokens that the top layers' attention attends
to through a zero-initialised gate, so training starts from the base model's own outputs
(peft.AdaptionPromptConfig, Zhang et al. 2023). Llama-family models only (and GPT-2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftlab.methods.base import PeftMethod, key, method_name, register, require_counts


@register
@dataclass
class AdaptionPrompt(PeftMethod):
    method: str = method_name("adaption_prompt")
    adapter_len: int = key(10, "Trained prompt tokens in each adapted layer (the paper's 10).")
    adapter_layers: int | None = key(
        None, "How many layers, counted from the top, attend to the prompt; null: every layer."
    )

    peft_type: ClassVar[str] = "ADAPTION_PROMPT"
    # Its prompts live in the layers' attention, not in front of the input.
    is_prompt_learning: ClassVar[bool] = False
    # Of 3.3e-3, 0.01, 0.03, 0.09, the lowest held-out loss (2.525) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 0.03

    def __post_init__(self) -> None:
        require_counts(self, "adapter_len")
        if self.adapter_layers is not None:
            require_counts(self, "adapter_layers")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.adapter_len", [4, 10, 20])

    def peft_config(self, model, tokenizer_path):
        from peft import AdaptionPromptConfig, TaskType

        layers = self.adapter_layers or model.config.num_hidden_layers
        return AdaptionPromptConfig(
            task_type=TaskType.CAUSAL_LM, adapter_len=self.adapter_len, adapter_layers=layers
        )

    @classmethod
    def detach(cls, peft_model):
        # Not a tuner layer that unload() removes: the adapted attentions swap back out.
        peft_model.base_model.disable_adapter_layers()
