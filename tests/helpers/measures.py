"""What a run measures, measured again outside it: held-out losses (of a logged adapter too),
tokens an epoch, the labelled answers of a tokenized row, greedy decoding."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerFast, RepetitionPenaltyLogitsProcessor

from helpers.configs import compose_config, tiny_overrides
from peftlab import data, modeling, tracking, training
from peftlab.config import ModelConfig
from peftlab.schema import to_settings


def logged_adapter_loss(work: Path, model_dir: Path, run_id: str, *overrides: str) -> float:
    """Held-out loss of the adapter a run logged, downloaded from its store onto a fresh base:
    a check of the logged eval_loss that does not go through the run's own numbers."""
    reload = work / f"reload-{run_id}"
    reload.mkdir()
    client = tracking.client(f"sqlite:///{work}/mlruns/mlflow.db")
    adapter = client.download_artifacts(run_id, "adapter", str(reload))
    loaded = modeling.load(ModelConfig(name_or_path=str(model_dir)))
    model = PeftModel.from_pretrained(loaded.model, adapter).eval()
    return held_out_loss(model, loaded.tokenizer, model_dir, reload, *overrides)


def held_out_loss(model, tokenizer, model_dir: Path, work: Path, *overrides: str) -> float:
    """The held-out loss of ``model`` on a tiny run's held-out rows, as a run measures it."""
    cfg = to_settings(
        compose_config([*tiny_overrides(model_dir, work), f"output_dir={work}", *overrides])
    )
    splits = data.load_tokenized(cfg.dataset, tokenizer)
    args = training.training_arguments(cfg.trainer, work)
    return training.evaluate_loss(model, tokenizer, args, splits.eval)


def real_tokens_per_epoch(model_dir: Path, *overrides: str) -> int:
    """A tiny run's training tokens an epoch, padding not counted (the attention mask's ones)."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    cfg = to_settings(
        compose_config([*tiny_overrides(model_dir, model_dir), "output_dir=unused", *overrides])
    )
    return sum(map(sum, data.load_tokenized(cfg.dataset, tokenizer).train["attention_mask"]))


def answers(row: dict, tokenizer) -> list[str]:
    """The labelled runs of tokens of a tokenized row, decoded."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label == data.IGNORED:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    return [tokenizer.decode(run) for run in [*runs, current] if run]


@torch.no_grad()
def reference_greedy(peft_model, tokenizer, prompt: str, max_new_tokens: int, penalty: float):
    """Token-by-token greedy decoding through the adapted model's own forward, no KV cache."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(peft_model.device)
    start = ids.shape[1]
    processor = RepetitionPenaltyLogitsProcessor(penalty)
    for _ in range(max_new_tokens):
        logits = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        next_id = processor(ids, logits.logits[:, -1]).argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
        if next_id.item() == tokenizer.eos_token_id:
            break
    return tokenizer.decode(ids[0, start:], skip_special_tokens=True).strip()
