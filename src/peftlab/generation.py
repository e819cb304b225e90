"""Generate from the base model, as it is or through a tuned adapter.

peft's ``PeftModel.generate`` is wrong with the KV cache for prompt-learning methods (peft 0.21,
transformers 5): it re-injects the virtual tokens at every cached step, and drops a prefix-tuning
prefix altogether. So the adapter's prefix is put in front once and the base model decodes with
its own cache: virtual-token embeddings (prompt tuning, P-tuning) are prepended as
``inputs_embeds``; prefix-tuning keys and values become the initial cache. Adapters that live in
the layers (LoRA, IA3) need nothing: the base model's layers carry them.
"""

from __future__ import annotations

import torch
from peft import PeftModel
from transformers import Cache, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from peftlab.config import GenerationSettings

Prefix = torch.Tensor | Cache  # virtual-token embeddings, or per-layer keys and values


def prefix(peft_model: PeftModel) -> Prefix | None:
    """What the active adapter puts in front of the input; None for adapters in the layers.

    A prefix cache grows as it decodes, so take a new one for every generation.
    """
    if not peft_model.active_peft_config.is_prompt_learning:
        return None
    with torch.no_grad():
        prompt = peft_model.get_prompt(batch_size=1)
    return prompt.detach() if isinstance(prompt, torch.Tensor) else prompt


def generation_config(
    settings: GenerationSettings, tokenizer: PreTrainedTokenizerBase
) -> GenerationConfig:
    sampling = {"temperature": settings.temperature, "top_p": settings.top_p}
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        repetition_penalty=settings.repetition_penalty,
        do_sample=settings.do_sample,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(sampling if settings.do_sample else {}),
    )


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    settings: GenerationSettings,
    before: Prefix | None = None,
) -> str:
    """The continuation of ``prompt`` (without the prompt), greedy unless do_sample is set."""
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
    # input_ids travel along so that repetition_penalty sees the prompt's tokens, as in peft.
    inputs = {"input_ids": input_ids}
    length = input_ids.shape[1]
    if isinstance(before, torch.Tensor):
        embeds = model.get_input_embeddings()(input_ids)
        inputs["inputs_embeds"] = torch.cat([before.to(embeds), embeds], dim=1)
        length += before.shape[1]
    elif before is not None:
        inputs["cache"] = before
        length += before.get_seq_length()
    output = model.generate(
        **inputs,
        attention_mask=torch.ones((1, length), dtype=torch.long, device=model.device),
        generation_config=generation_config(settings, tokenizer),
    )
    return tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True).strip()
