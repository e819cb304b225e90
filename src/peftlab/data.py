"""Text datasets: load from a local file or the Hub, split train/held-out, tokenize."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from functools import lru_cache

from datasets import Dataset, load_dataset
from transformers import PreTrainedTokenizerBase

from peftlab import data_files, hub
from peftlab.config import DatasetConfig
from peftlab.errors import PeftlabError

log = logging.getLogger(__name__)


@dataclass
class Splits:
    train: Dataset
    eval: Dataset
    skipped_lines: int = 0  # of the file, under dataset.on_bad_lines=skip


@dataclass
class Texts:
    rows: Dataset  # the text column, rows with text only, in file order
    skipped_lines: int


def load_texts(cfg: DatasetConfig) -> Texts:
    """The dataset's text column, rows with empty text left out."""
    if cfg.data_files:
        read = data_files.read(cfg)
        table, skipped = read.table, read.skipped
    else:
        table, skipped = _load_hub(cfg).to_pandas(), 0
    column = cfg.text_column
    if column not in table.columns:
        raise PeftlabError(
            f"dataset.text_column={column!r} is not a column of {source(cfg)}; "
            f"columns: {', '.join(map(str, table.columns))}"
        )
    texts = [None if _is_null(value) else value for value in table[column]]
    _require_text(texts, cfg)
    rows = Dataset.from_dict({column: [t for t in texts if t is not None and t.strip()]})
    return Texts(rows, skipped)


def _is_null(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _require_text(texts: list, cfg: DatasetConfig) -> None:
    """Every value is text or empty, and some are text: a column of numbers is a wrong column."""
    for row, value in enumerate(texts, start=1):
        if value is not None and not isinstance(value, str):
            raise PeftlabError(
                f"dataset.text_column={cfg.text_column!r}: row {row} of {source(cfg)} holds "
                f"{value!r} ({type(value).__name__}), not text; pick the column with the texts"
            )
    if all(value is None or not value.strip() for value in texts):
        raise PeftlabError(
            f"dataset.text_column={cfg.text_column!r}: every row of {source(cfg)} is empty there"
        )


def source(cfg: DatasetConfig) -> str:
    return cfg.data_files or cfg.path or ""


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
    texts = load_texts(cfg)
    if texts.skipped_lines:
        log.warning("Skipped %d lines of %s that did not parse", texts.skipped_lines, source(cfg))
    return replace(split(texts.rows, cfg), skipped_lines=texts.skipped_lines)


@lru_cache(maxsize=1)
def load_splits(cfg: DatasetConfig, tokenizer: PreTrainedTokenizerBase) -> Splits:
    """Tokenized train and held-out rows; shared by the jobs of a sweep in one process."""
    splits = load_text_splits(cfg)
    return replace(
        splits,
        train=tokenize(splits.train, tokenizer, cfg),
        eval=tokenize(splits.eval, tokenizer, cfg),
    )


def real_tokens(dataset: Dataset) -> int:
    return sum(len(ids) for ids in dataset["input_ids"])
