"""What a run measures, measured again outside it: held-out losses (of a logged adapter too),
the loss on the general text, tokens an epoch, the labelled answers of a tokenized row, greedy
decoding."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from torch.nn import functional
from transformers import PreTrainedTokenizerFast, RepetitionPenaltyLogitsProcessor

from helpers.configs import compose_config, tiny_overrides
from peftlab import data, modeling, tracking, training
from peftlab.config import SAMPLES_DIR, ModelConfig
from peftlab.schema import to_settings


def logged_adapter_loss(work: Path, model_dir: Path, run_id: str, *overrides: str) -> float:
    """Held-out loss of the adapter a run logged, downloaded from its store onto a fresh base:
    a check of the logged eval_loss that does not go through the run's own numbers."""
    reload = work / f"reload-{run_id}"
    model, tokenizer = logged_adapter(work, model_dir, run_id, reload)
    return held_out_loss(model, tokenizer, model_dir, reload, *overrides)


def logged_adapter(work: Path, model_dir: Path, run_id: str, reload: Path):
    """The adapter a run logged, downloaded from its store into ``reload`` and put on a fresh
    base model; with its tokenizer."""
    reload.mkdir()
    client = tracking.client(f"sqlite:///{work}/mlruns/mlflow.db")
    adapter = client.download_artifacts(run_id, "adapter", str(reload))
    loaded = modeling.load(ModelConfig(name_or_path=str(model_dir)))
    return PeftModel.from_pretrained(loaded.model, adapter).eval(), loaded.tokenizer


def held_out_loss(model, tokenizer, model_dir: Path, work: Path, *overrides: str) -> float:
    """The held-out loss of ``model`` on a tiny run's held-out rows, as a run measures it."""
    cfg = to_settings(
        compose_config([*tiny_overrides(model_dir, work), f"output_dir={work}", *overrides])
    )
    splits = data.load_tokenized(cfg.dataset, tokenizer)
    args = training.training_arguments(cfg.trainer, work)
    return training.evaluate_loss(model, tokenizer, args, splits.eval)


@torch.no_grad()
def general_text_loss(model, tokenizer, max_length: int) -> float:
    """The loss of ``model`` on the shipped general text, summed here over each row's tokens and
    divided by their count: each row's ids as the tokenizer makes them, EOS after, cut to
    ``max_length`` with EOS last; every token predicted from what comes before it (the first
    too, where a prompt-learning adapter puts virtual tokens in front)."""
    rows = []
    for line in (SAMPLES_DIR / "general.jsonl").read_text().splitlines():
        ids = [*tokenizer(json.loads(line)["text"]).input_ids, tokenizer.eos_token_id][:max_length]
        rows.append([*ids[:-1], tokenizer.eos_token_id])
    longest = max(map(len, rows))  # one batch, padded on the right: a row's tokens come first
    batch = torch.tensor([ids + [0] * (longest - len(ids)) for ids in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids in rows])
    logits = model(input_ids=batch, attention_mask=mask).logits.float()
    before = logits.shape[1] - longest  # virtual tokens in front
    loss, tokens = 0.0, 0
    for row, ids in zip(logits, rows, strict=True):
        targets = torch.tensor(ids if before else ids[1:])
        predicted = row[before - 1 : before + len(ids) - 1] if before else row[: len(ids) - 1]
        loss += functional.cross_entropy(predicted, targets, reduction="sum").item()
        tokens += len(targets)
    return loss / tokens


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
