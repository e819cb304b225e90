"""Text datasets: load from a local file or the Hub, split train/held-out, tokenize."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from datasets import Dataset, load_dataset
from transformers import PreTrainedTokenizerBase

from peftlab import hub
from peftlab.config import DatasetConfig
from peftlab.errors import PeftlabError

log = logging.getLogger(__name__)

BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class Splits:
    train: Dataset
    eval: Dataset


def load_texts(cfg: DatasetConfig) -> Dataset:
    """The dataset's rows with a non-empty ``text_column``, in file order."""
    dataset = _load_local(cfg) if cfg.data_files else _load_hub(cfg)
    if cfg.text_column not in dataset.column_names:
        raise PeftlabError(
            f"dataset.text_column={cfg.text_column!r} is not a column of {source(cfg)}; "
            f"columns: {', '.join(dataset.column_names)}"
        )
    column = cfg.text_column
    return dataset.filter(lambda row: bool(row[column] and row[column].strip()))


def source(cfg: DatasetConfig) -> str:
    return cfg.data_files or cfg.path or ""


def _load_local(cfg: DatasetConfig) -> Dataset:
    path = Path(cfg.data_files).expanduser()
    if not path.is_file():
        raise PeftlabError(f"dataset.data_files={cfg.data_files!r}: no such file")
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise PeftlabError(
            f"dataset.data_files={cfg.data_files!r}: unsupported file type {path.suffix!r}; "
            f"allowed: {', '.join(BUILDERS)}"
        )
    return load_dataset(builder, data_files=str(path), split="train")


def _load_hub(cfg: DatasetConfig) -> Dataset:
    path = hub.resolve(
        cfg.path,
        key="dataset.path",
        repo_type="dataset",
        offline_alternative="dataset=prompts-sample (or dataset.data_files=<your file>)",
        revision=cfg.revision,
    )
    return load_dataset(path, split=cfg.split, revision=cfg.revision)


def split(dataset: Dataset, cfg: DatasetConfig) -> Splits:
    """First ``train_rows`` rows to train, last ``eval_rows`` held out: disjoint, deterministic."""
    needed = cfg.train_rows + cfg.eval_rows
    if needed > len(dataset):
        raise PeftlabError(
            f"dataset.train_rows={cfg.train_rows} + dataset.eval_rows={cfg.eval_rows} exceeds the "
            f"{len(dataset)} usable rows of {source(cfg)}; lower one of them"
        )
    rows = len(dataset)
    return Splits(
        train=dataset.select(range(cfg.train_rows)),
        eval=dataset.select(range(rows - cfg.eval_rows, rows)),
    )


def tokenize(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: DatasetConfig) -> Dataset:
    """Token ids of each text, truncated to ``max_length`` and always ending in EOS."""

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch[cfg.text_column], truncation=True, max_length=cfg.max_length - 1)
        ids = [row + [tokenizer.eos_token_id] for row in encoded["input_ids"]]
        return {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids]}

    return dataset.map(
        encode, batched=True, remove_columns=dataset.column_names, keep_in_memory=True
    )


@lru_cache(maxsize=1)
def load_text_splits(cfg: DatasetConfig) -> Splits:
    """Train and held-out rows as text; shared by the jobs of a sweep in one process."""
    return split(load_texts(cfg), cfg)


@lru_cache(maxsize=1)
def load_splits(cfg: DatasetConfig, tokenizer: PreTrainedTokenizerBase) -> Splits:
    """Tokenized train and held-out rows; shared by the jobs of a sweep in one process."""
    splits = load_text_splits(cfg)
    return Splits(
        train=tokenize(splits.train, tokenizer, cfg), eval=tokenize(splits.eval, tokenizer, cfg)
    )


def real_tokens(dataset: Dataset) -> int:
    return sum(len(ids) for ids in dataset["input_ids"])
