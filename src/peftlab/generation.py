"""Generate from the base model, as it is or through a tuned adapter, a batch at a time.

peft's ``PeftModel.generate`` is wrong with the KV cache for prompt-learning methods (peft 0.21,
transformers 5): it re-injects the virtual tokens at every cached step, and drops a prefix-tuning
prefix altogether. So the adapter's prefix is put in front once and the base model decodes with
its own cache: virtual-token embeddings (prompt tuning, P-tuning) are prepended as
``inputs_embeds``; prefix-tuning keys and values become the initial cache. Adapters that live in
the layers (LoRA, IA3) need nothing: the base model's layers carry them.

Prompts of a batch are padded on the left, between the prefix and the prompt, and masked: each
token keeps the position it has alone (positions count unmasked tokens), so a batch generates
what its prompts would one at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from peft import PeftModel
from transformers import Cache, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from peftlab.config import GenerationSettings

Prefix = torch.Tensor | Cache  # virtual-token embeddings, or per-layer keys and values
# The adapter's prefix for a batch of this size; None for the base model or adapters in layers.
PrefixFor = Callable[[int], Prefix | None]


def prefix(peft_model: PeftModel) -> PrefixFor:
    """The active adapter's prefix, made for each batch (a prefix cache grows as it decodes)."""

    def make(batch_size: int) -> Prefix | None:
        if not peft_model.active_peft_config.is_prompt_learning:
            return None
        with torch.no_grad():
            prompt = peft_model.get_prompt(batch_size=batch_size)
        return prompt.detach() if isinstance(prompt, torch.Tensor) else prompt

    return make


def no_prefix(batch_size: int) -> None:
    return None


def generation_config(
    settings: GenerationSettings, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int
) -> GenerationConfig:
    sampling = {"temperature": settings.temperature, "top_p": settings.top_p}
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        repetition_penalty=settings.repetition_penalty,
        do_sample=settings.do_sample,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(sampling if settings.do_sample else {}),
    )


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    settings: GenerationSettings,
    before: PrefixFor = no_prefix,
) -> str:
    """The continuation of one ``prompt``, up to ``max_new_tokens``."""
    return complete(model, tokenizer, [prompt], settings, before, settings.max_new_tokens)[0]


def complete(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    settings: GenerationSettings,
    before: PrefixFor = no_prefix,
    max_new_tokens: int | None = None,
) -> list[str]:
    """The continuations of ``prompts`` (without the prompts), greedy unless do_sample is set,
    ``generation.eval_batch_size`` at a time."""
    config = generation_config(settings, tokenizer, max_new_tokens or settings.eval_max_new_tokens)
    size = settings.eval_batch_size
    return [
        text
        for start in range(0, len(prompts), size)
        for text in _complete_batch(model, tokenizer, prompts[start : start + size], config, before)
    ]


@torch.no_grad()
def _complete_batch(model, tokenizer, prompts, config, before: PrefixFor) -> list[str]:
    rows = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    longest = max(len(row) for row in rows)
    input_ids = torch.tensor([[config.pad_token_id] * (longest - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows])
    input_ids, mask = input_ids.to(model.device), mask.to(model.device)
    # input_ids travel along so that repetition_penalty sees the prompt's tokens, as in peft.
    inputs = {"input_ids": input_ids}
    prefix = before(len(prompts))
    if isinstance(prefix, torch.Tensor):
        embeds = model.get_input_embeddings()(input_ids)
        inputs["inputs_embeds"] = torch.cat([prefix.to(embeds), embeds], dim=1)
        prefix_length = prefix.shape[1]
    elif prefix is not None:
        inputs["cache"] = prefix
        prefix_length = prefix.get_seq_length()
    else:
        prefix_length = 0
    ones = torch.ones((len(prompts), prefix_length), dtype=mask.dtype, device=mask.device)
    output = model.generate(
        **inputs, attention_mask=torch.cat([ones, mask], dim=1), generation_config=config
    )
    new = output[:, input_ids.shape[1] :]
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new]
