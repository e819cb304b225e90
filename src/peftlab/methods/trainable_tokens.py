"""Trainable tokens: the embeddings of a few chosen tokens are trained, the rest of the model
stays frozen (peft.TrainableTokensConfig); on a model with tied embeddings the output rows of
those tokens follow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftlab.methods.base import INIT_TEXT, LayerMethod, key, method_name, register, require


@register
@dataclass
class TrainableTokens(LayerMethod):
    method: str = method_name("trainable_tokens")
    trained_text: str = key(
        INIT_TEXT,
        "The text whose tokens' embeddings are trained (peft's token_indices, tokenized with "
        "the model's tokenizer): by default the phrase every role-play prompt starts with.",
    )

    peft_type: ClassVar[str] = "TRAINABLE_TOKENS"
    config_class: ClassVar[str] = "TrainableTokensConfig"
    # Of 1e-3, 3e-3, 9e-3, 0.027, the lowest held-out loss (2.550) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 9e-3
    # peft's second adapter wraps the first's layer, which it cannot ("unknown layer type").
    shares_a_base: ClassVar[bool] = False

    def __post_init__(self) -> None:
        require(bool(self.trained_text), "peft.trained_text", self.trained_text, "a non-empty text")

    @classmethod
    def suggest(cls, trial):
        """One text to train: a search tunes its learning rate alone."""

    def peft_config(self, model, tokenizer_path):
        from peft import TaskType, TrainableTokensConfig
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        ids = tokenizer(self.trained_text, add_special_tokens=False).input_ids
        return TrainableTokensConfig(task_type=TaskType.CAUSAL_LM, token_indices=sorted(set(ids)))
