"""Prefix tuning: trainable keys and values in front of every attention layer's own
(peft.PrefixTuningConfig, Li & Liang 2021), optionally produced by an MLP over the prefix."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

from peftlab.methods.base import (
    INIT_TEXT,
    VIRTUAL_TOKENS,
    PeftMethod,
    method_name,
    register,
    require,
    require_counts,
)


@register
@dataclass
class PrefixTuning(PeftMethod):
    method: str = method_name("prefix_tuning")
    num_virtual_tokens: int = field(
        default=20,
        metadata={"help": "Positions of trained keys and values before every attention layer's."},
    )
    prefix_projection: bool = field(
        default=False,
        metadata={
            "help": "Make the keys and values with an MLP over trained embeddings "
            "(needs prefix_init_text=null)."
        },
    )
    encoder_hidden_size: int = field(
        default=128, metadata={"help": "Width of the projection MLP, when prefix_projection."}
    )
    prefix_init_text: str | None = field(
        default=INIT_TEXT,
        metadata={
            "help": "Start the prefix from the base model's own keys and values over this text "
            "(its tokens repeated to num_virtual_tokens), so that at step 0 the adapter is the "
            "text as a hard prompt; null: peft's N(0, 1) start, far from any keys and values "
            "the model computes (held-out loss rises before it falls)."
        },
    )

    peft_type: ClassVar[str] = "PREFIX_TUNING"
    is_prompt_learning: ClassVar[bool] = True
    # Of 1e-3, 3e-3, 9e-3, 0.027, the lowest held-out loss (2.391) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 9e-3

    def __post_init__(self) -> None:
        require_counts(self, "num_virtual_tokens", "encoder_hidden_size")
        require(
            not (self.prefix_projection and self.prefix_init_text),
            "peft.prefix_init_text",
            self.prefix_init_text,
            "null when peft.prefix_projection=true (the MLP makes the keys and values)",
        )

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.num_virtual_tokens", VIRTUAL_TOKENS)

    def peft_config(self, model, tokenizer_path):
        from peft import PrefixTuningConfig, TaskType

        return PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=self.num_virtual_tokens,
            prefix_projection=self.prefix_projection,
            encoder_hidden_size=self.encoder_hidden_size,
        )

    @contextmanager
    def attached(self, model, tokenizer_path) -> Iterator:
        with super().attached(model, tokenizer_path) as peft_model:
            if self.prefix_init_text:
                prefix = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight
                with_text = keys_and_values(
                    model, tokenizer_path, self.prefix_init_text, len(prefix)
                )
                prefix.data.copy_(with_text)
            yield peft_model


def keys_and_values(model, tokenizer_path: str, text: str, length: int):
    """The base model's keys and values over ``text``, its tokens repeated to ``length``, laid
    out as peft's prefix embedding: one row per position, layers x (key, value) x heads x dim."""
    import torch
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tokenizer_path)(text, add_special_tokens=False).input_ids
    ids = (ids * math.ceil(length / len(ids)))[:length]
    with torch.no_grad():
        cache = model(
            input_ids=torch.tensor([ids], device=model.device), use_cache=True
        ).past_key_values
    # Each (1, heads, length, head_dim), in peft's order: layer 0 key, layer 0 value, layer 1 ...
    tensors = [t for layer in cache.layers for t in (layer.keys, layer.values)]
    return torch.stack(tensors).squeeze(1).permute(2, 0, 1, 3).reshape(length, -1)
