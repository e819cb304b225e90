"""Datasets: rows from a local file or the Hub, examples of the configured format, the train and
held-out split, and token ids with the labels the loss is taken on.

Everything up to the split imports neither torch nor transformers: a data file's faults are
found in seconds, before any model loads (:func:`check`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from peftlab import data_files, formats
from peftlab.errors import PeftlabError
from peftlab.formats import BadRow, DataFormat, Example
from peftlab.schema import DatasetConfig

if TYPE_CHECKING:
    import pandas as pd
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)
IGNORED = -100  # the label of a token the loss leaves out


@dataclass
class Examples:
    rows: list[Example]  # in file order, rows with nothing in them left out
    skipped_lines: int  # of the file, under dataset.on_bad_lines=skip
    source: str


@dataclass
class Splits:
    train: list[Example]
    eval: list[Example]
    skipped_lines: int = 0


@dataclass
class Tokenized:
    train: Dataset
    eval: Dataset
    dropped: int = 0  # examples whose answer did not fit in dataset.max_length


def load_examples(cfg: DatasetConfig, held_out: bool = False) -> Examples:
    """The rows of the dataset (or of its separate held-out source) as examples."""
    key = "dataset.eval_data_files" if held_out and cfg.eval_data_files else "dataset.data_files"
    where = getattr(cfg, key.removeprefix("dataset."))
    if where:
        read = data_files.read(cfg, key)
        table, skipped, name = read.table, read.skipped, where
    else:
        split_name = cfg.eval_split if held_out else cfg.split
        table, skipped, name = _load_hub(cfg, split_name).to_pandas(), 0, cfg.path
    fmt = formats.of(cfg)
    _require_columns(table, fmt, name)
    rows = []
    for number, row in enumerate(table.to_dict("records"), start=1):
        try:
            example = fmt.example(row)
        except BadRow as error:
            if cfg.on_bad_lines == "error":
                raise PeftlabError(
                    f"{error}, in row {number} of {name}; fix it, or set dataset.on_bad_lines=skip"
                ) from None
            skipped += 1
            continue
        if example is not None:
            rows.append(example)
    if not rows:
        key, column = fmt.columns()[-1]
        raise PeftlabError(f"{key}={column!r}: every row of {name} is empty there")
    return Examples(rows, skipped, name)


def _require_columns(table: pd.DataFrame, fmt: DataFormat, name: str) -> None:
    for key, column in fmt.columns():
        if column not in table.columns:
            value = getattr(fmt.cfg, key.removeprefix("dataset."))
            field = "" if value == column else f": {{{column}}}"
            raise PeftlabError(
                f"{key}={value!r}{field} is not a column of {name}; "
                f"columns: {', '.join(map(str, table.columns))}"
            )


def _load_hub(cfg: DatasetConfig, split_name: str):
    from datasets import load_dataset

    from peftlab import hub

    path = hub.resolve(
        cfg.path,
        key="dataset.path",
        repo_type="dataset",
        offline_alternative="dataset=prompts-sample (or dataset.data_files=<your file>)",
        revision=cfg.revision,
    )
    return load_dataset(path, split=split_name, revision=cfg.revision)


def source(cfg: DatasetConfig) -> str:
    return cfg.data_files or cfg.path or ""


def split(rows: Sequence[Example], cfg: DatasetConfig) -> tuple[list, list]:
    """``train_rows`` to train (null: every row not held out) and ``eval_rows`` held out,
    disjoint and deterministic: the first and last rows, or with ``split_seed`` a seeded
    shuffle's first and last."""
    training = len(rows) - cfg.eval_rows if cfg.train_rows is None else cfg.train_rows
    if training < 1:
        raise PeftlabError(
            f"dataset.eval_rows={cfg.eval_rows} leaves no row to train on of the {len(rows)} "
            f"usable rows of {source(cfg)}; lower it"
        )
    if training + cfg.eval_rows > len(rows):
        raise PeftlabError(
            f"dataset.train_rows={cfg.train_rows} + dataset.eval_rows={cfg.eval_rows} exceeds the "
            f"{len(rows)} usable rows of {source(cfg)}; lower one of them"
        )
    order = _order(len(rows), cfg.split_seed)
    return [rows[i] for i in order[:training]], [rows[i] for i in order[-cfg.eval_rows :]]


def _order(count: int, seed: int | None) -> list[int]:
    if seed is None:
        return list(range(count))
    return np.random.default_rng(seed).permutation(count).tolist()


def _first(
    rows: Sequence[Example], count: int | None, key: str, cfg: DatasetConfig, name: str
) -> list:
    """The first ``count`` rows (None: all), in the split's order."""
    if count is not None and count > len(rows):
        raise PeftlabError(f"{key}={count} exceeds the {len(rows)} usable rows of {name}; lower it")
    return [rows[i] for i in _order(len(rows), cfg.split_seed)[:count]]


@lru_cache(maxsize=1)
def load_splits(cfg: DatasetConfig) -> Splits:
    """Train and held-out examples; shared by the jobs of a sweep in one process."""
    examples = load_examples(cfg)
    if cfg.eval_data_files is None and cfg.eval_split is None:
        train, held_out = split(examples.rows, cfg)
        skipped = examples.skipped_lines
    else:
        evaluation = load_examples(cfg, held_out=True)
        train = _first(examples.rows, cfg.train_rows, "dataset.train_rows", cfg, examples.source)
        held_out = _first(
            evaluation.rows, cfg.eval_rows, "dataset.eval_rows", cfg, evaluation.source
        )
        skipped = examples.skipped_lines + evaluation.skipped_lines
    if skipped:
        log.warning(
            "Skipped %d rows of %s that did not parse or hold no example", skipped, source(cfg)
        )
    return Splits(train, held_out, skipped)


def check(cfg: DatasetConfig) -> None:
    """Read and split the data now: its faults are one line before any model loads."""
    load_splits(cfg)


def table(rows: Sequence[Example]) -> pd.DataFrame:
    """The examples' columns as they were in the file (what a run logs as its dataset)."""
    import pandas as pd

    return pd.DataFrame([dict(example.fields) for example in rows])


def tokenize(
    rows: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    cfg: DatasetConfig,
    train_on: str,
) -> tuple[Dataset, int]:
    """Token ids and labels of each example, with how many were dropped for not fitting.

    Plain text is cut to ``max_length`` and ends in EOS. Examples with a prompt are never cut:
    one whose answer would not fit is dropped. Each segment is tokenized alone, so a prompt's
    ids are the same here as when a tuned model generates from it; an answer ends in EOS.
    """
    from datasets import Dataset

    fmt = formats.of(cfg)
    fmt.check_tokenizer(tokenizer)
    encoded, dropped = [], 0
    for example in rows:
        ids, labels = _encode(fmt.segments(example, tokenizer), tokenizer, train_on)
        if fmt.has_prompt and len(ids) > cfg.max_length:
            dropped += 1
            continue
        ids, labels = ids[: cfg.max_length], labels[: cfg.max_length]
        if not fmt.has_prompt and ids[-1] != tokenizer.eos_token_id:  # cut: EOS back at the end
            ids[-1] = labels[-1] = tokenizer.eos_token_id
        encoded.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return Dataset.from_list(encoded), dropped


def _encode(segments, tokenizer, train_on: str) -> tuple[list[int], list[int]]:
    ids, labels = [], []
    for i, segment in enumerate(segments):
        # Special tokens (a BOS) as the tokenizer adds them to a text: before the first only.
        part = tokenizer(segment.text, add_special_tokens=i == 0)["input_ids"]
        if segment.answer and tokenizer.eos_token_id not in part:  # a chat's end-of-turn may be EOS
            part = [*part, tokenizer.eos_token_id]
        ids += part
        labels += part if segment.answer or train_on == "all" else [IGNORED] * len(part)
    return ids, labels


@lru_cache(maxsize=1)
def load_tokenized(cfg: DatasetConfig, tokenizer: PreTrainedTokenizerBase) -> Tokenized:
    """Tokenized train and held-out rows; shared by the jobs of a sweep in one process.

    The held-out loss is over the answers only, whatever ``train_on`` says about training.
    """
    splits = load_splits(cfg)
    fmt = formats.of(cfg)
    train, dropped_train = tokenize(splits.train, tokenizer, cfg, fmt.train_on)
    held_out, dropped_eval = tokenize(splits.eval, tokenizer, cfg, "completion")
    for name, kept in (("train", train), ("held-out", held_out)):
        if not len(kept):
            raise PeftlabError(
                f"dataset.max_length={cfg.max_length}: no {name} example fits (prompt and answer "
                "are never cut); raise it"
            )
    if dropped_train + dropped_eval:
        log.warning(
            "Dropped %d train and %d held-out examples longer than dataset.max_length=%d "
            "(answers are never cut)",
            dropped_train,
            dropped_eval,
            cfg.max_length,
        )
    return Tokenized(train, held_out, dropped_train + dropped_eval)


def load_general(
    name: str | None, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Dataset | None:
    """The rows of general prose in file ``name`` (generation.general_data_files, a column
    ``text``) tokenized as plain-text held-out rows are, each cut to ``max_length`` tokens: what
    forgetting is measured on. None for no file: forgetting is not measured."""
    if name is None:
        return None
    key = "generation.general_data_files"
    cfg = DatasetConfig(name=key, data_files=name, max_length=max_length)
    table = data_files.read(cfg, key, name).table
    if cfg.text_column not in table.columns:
        raise PeftlabError(
            f"{key}={name!r}: no column {cfg.text_column!r}; columns: "
            f"{', '.join(map(str, table.columns))}"
        )
    fmt, rows = formats.of(cfg), []
    for number, row in enumerate(table.to_dict("records"), start=1):
        try:
            rows.append(fmt.example(row))
        except BadRow as error:
            raise PeftlabError(f"{key}={name!r} row {number}: {error}") from None
    rows = [row for row in rows if row is not None]  # empty rows, left out as in any data
    if not rows:
        raise PeftlabError(f"{key}={name!r}: every row is empty")
    return tokenize(rows, tokenizer, cfg, "completion")[0]


def real_tokens(dataset: Dataset) -> int:
    return sum(len(ids) for ids in dataset["input_ids"])
