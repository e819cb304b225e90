"""Generate from the base model, optionally behind a tuned soft prompt.

peft's ``PeftModel.generate`` re-injects the virtual tokens at every decoding step once the KV
cache is on (BLOOM fails on ALiBi sizes, Llama silently decodes wrong tokens). Here the soft
prompt is prepended once, as ``inputs_embeds``, and the base model generates with its cache.
"""

from __future__ import annotations

import torch
from peft import PeftModel
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from peftlab.config import GenerationSettings


def soft_prompt(peft_model: PeftModel) -> torch.Tensor:
    """The active adapter's virtual-token embeddings, shape (1, num_virtual_tokens, hidden)."""
    with torch.no_grad():
        return peft_model.get_prompt(batch_size=1).detach()


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
    prompt_embeds: torch.Tensor | None = None,
) -> str:
    """The continuation of ``prompt`` (without the prompt), greedy unless do_sample is set."""
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
    embeds = model.get_input_embeddings()(input_ids)
    if prompt_embeds is not None:
        embeds = torch.cat([prompt_embeds.to(embeds), embeds], dim=1)
    # input_ids travel along so that repetition_penalty sees the prompt's tokens, as in peft.
    output = model.generate(
        input_ids=input_ids,
        inputs_embeds=embeds,
        attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=model.device),
        generation_config=generation_config(settings, tokenizer),
    )
    return tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True).strip()
