from pathlib import Path

import pytest
import torch
from helpers.configs import compose_config
from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from transformers import RepetitionPenaltyLogitsProcessor

from peftlab import generation, modeling
from peftlab.config import GenerationSettings, ModelConfig
from peftlab.schema import to_settings

PROMPT = "I want you to act as a motivational coach."


def reference_greedy(model, tokenizer, prompt, soft, max_new_tokens, penalty):
    """Token-by-token greedy decoding without a KV cache: the whole sequence every step."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
    start = ids.shape[1]
    processor = RepetitionPenaltyLogitsProcessor(penalty)
    for _ in range(max_new_tokens):
        embeds = torch.cat([soft, model.get_input_embeddings()(ids)], dim=1)
        logits = model(inputs_embeds=embeds, use_cache=False).logits[:, -1]
        next_id = processor(ids, logits).argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
        if next_id.item() == tokenizer.eos_token_id:
            break
    return tokenizer.decode(ids[0, start:], skip_special_tokens=True).strip()


@pytest.mark.parametrize("model_fixture", ["tiny_bloom", "tiny_llama"])
@pytest.mark.parametrize("penalty", [1.0, 1.5])
@torch.no_grad()
def test_tuned_greedy_output_equals_uncached_decoding(model_fixture, penalty, request):
    loaded = modeling.load(ModelConfig(name_or_path=str(request.getfixturevalue(model_fixture))))
    torch.manual_seed(0)
    peft_config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=6,
        prompt_tuning_init=PromptTuningInit.RANDOM,
    )
    peft_model = get_peft_model(loaded.model, peft_config)
    soft = generation.prefix(peft_model)
    settings = GenerationSettings(max_new_tokens=20, repetition_penalty=penalty)

    produced = generation.generate(loaded.model, loaded.tokenizer, PROMPT, settings, soft)
    expected = reference_greedy(loaded.model, loaded.tokenizer, PROMPT, soft(1), 20, penalty)
    assert produced == expected
    assert produced  # a random model still says something


@torch.no_grad()
def test_soft_prompt_changes_the_output(tiny_bloom: Path):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_bloom)))
    settings = GenerationSettings(max_new_tokens=12, repetition_penalty=1.0)
    hidden = loaded.model.config.hidden_size
    torch.manual_seed(1)
    soft = torch.randn(1, 4, hidden) * 10
    plain = generation.generate(loaded.model, loaded.tokenizer, PROMPT, settings)
    tuned = generation.generate(loaded.model, loaded.tokenizer, PROMPT, settings, lambda n: soft)
    assert plain != tuned


def composed_generation(*overrides: str) -> GenerationSettings:
    """The generation settings a run gets from conf/ (its defaults and ``overrides``)."""
    unused = ["tracking.uri=sqlite:///unused", "tracking.artifact_location=/unused",
              "output_dir=/unused"]  # fmt: skip
    return to_settings(compose_config([*unused, *overrides])).generation


@torch.no_grad()
def test_held_out_prompts_get_96_new_tokens_by_default(tiny_llama: Path, monkeypatch):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_llama)))
    asked = []
    real = loaded.model.generate

    def spy(*args, generation_config, **kwargs):
        asked.append(generation_config.max_new_tokens)
        return real(*args, generation_config=generation_config, max_new_tokens=1, **kwargs)

    monkeypatch.setattr(loaded.model, "generate", spy)
    generation.complete(loaded.model, loaded.tokenizer, [PROMPT], composed_generation())
    assert asked == [96]


@torch.no_grad()
def test_do_sample_samples_and_greedy_decoding_does_not(tiny_llama: Path):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_llama)))
    prompts = [PROMPT, "Tell me a quote about", "Role: Poet"]

    def outputs(settings: GenerationSettings, seed: int) -> list[str]:
        torch.manual_seed(seed)
        return generation.complete(
            loaded.model, loaded.tokenizer, prompts, settings, max_new_tokens=12
        )

    greedy = composed_generation()
    sampled = composed_generation("generation.do_sample=true")
    assert outputs(greedy, 0) == outputs(greedy, 1)  # greedy: the seed plays no part
    assert outputs(sampled, 0) == outputs(sampled, 0)  # sampling: the seed's draws
    assert outputs(sampled, 0) != outputs(sampled, 1)
    assert outputs(sampled, 0) != outputs(greedy, 0)
