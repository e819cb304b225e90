import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoTokenizer, DataCollatorForLanguageModeling

from peftlab import data
from peftlab.config import SAMPLES_DIR, DatasetConfig
from peftlab.errors import PeftlabError


def prompts_config(**overrides) -> DatasetConfig:
    values = {
        "name": "prompts-sample",
        "data_files": str(SAMPLES_DIR / "prompts.csv"),
        "text_column": "prompt",
    }
    return DatasetConfig(**{**values, **overrides})


def test_shipped_samples_follow_the_hub_datasets_schemas():
    prompts = data.load_texts(prompts_config())
    quotes = data.load_texts(
        DatasetConfig(name="q", data_files=str(SAMPLES_DIR / "quotes.jsonl"), text_column="quote")
    )
    assert prompts.column_names == ["act", "prompt"] and len(prompts) >= 80
    assert quotes.column_names == ["quote", "author", "tags"] and len(quotes) >= 80
    assert all(isinstance(tags, list) and tags for tags in quotes["tags"])


def test_split_is_disjoint_deterministic_and_takes_first_and_last_rows():
    cfg = prompts_config(train_rows=50, eval_rows=30)
    texts = data.load_texts(cfg)
    first, second = data.split(texts, cfg), data.split(texts, cfg)
    assert first.train["prompt"] == texts["prompt"][:50] == second.train["prompt"]
    assert first.eval["prompt"] == texts["prompt"][-30:] == second.eval["prompt"]
    assert not set(first.train["prompt"]) & set(first.eval["prompt"])


def test_too_many_rows_asked_for_is_an_error_naming_both_keys():
    cfg = prompts_config(train_rows=80, eval_rows=30)
    with pytest.raises(PeftlabError, match=r"dataset.train_rows=80 \+ dataset.eval_rows=30"):
        data.split(data.load_texts(cfg), cfg)


def test_every_example_ends_in_eos_which_stays_in_the_labels(tiny_llama: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.pad_token = "<pad>"
    cfg = prompts_config(train_rows=8, eval_rows=4, max_length=16)
    splits = data.load_splits(cfg, tokenizer)
    rows = splits.train["input_ids"]
    assert all(row[-1] == tokenizer.eos_token_id and len(row) <= 16 for row in rows)
    batch = DataCollatorForLanguageModeling(tokenizer, mlm=False)(list(splits.train))
    last = batch["attention_mask"].sum(dim=1) - 1
    assert (batch["labels"][range(len(rows)), last] == tokenizer.eos_token_id).all()


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", ".parquet"])
def test_local_files_of_each_format_load(tmp_path: Path, suffix: str):
    rows = pd.DataFrame({"text": [f"example number {i}" for i in range(12)], "id": range(12)})
    path = tmp_path / f"mine{suffix}"
    writers = {
        ".csv": lambda: rows.to_csv(path, index=False),
        ".json": lambda: rows.to_json(path, orient="records"),
        ".jsonl": lambda: rows.to_json(path, orient="records", lines=True),
        ".parquet": lambda: rows.to_parquet(path),
    }
    writers[suffix]()
    cfg = DatasetConfig(name="mine", data_files=str(path), text_column="text")
    assert data.load_texts(cfg)["text"] == list(rows["text"])


def test_empty_texts_are_dropped(tmp_path: Path):
    path = tmp_path / "gaps.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["text"], ["kept"], [""], ["   "], ["also kept"]])
    cfg = DatasetConfig(name="gaps", data_files=str(path), text_column="text")
    assert data.load_texts(cfg)["text"] == ["kept", "also kept"]


def test_missing_file_is_a_one_line_error(tmp_path: Path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(PeftlabError, match=f"dataset.data_files='{missing}': no such file"):
        data.load_texts(prompts_config(data_files=str(missing)))


def test_unsupported_file_type_lists_the_allowed_ones(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(PeftlabError, match=r"unsupported file type '.txt'; allowed: .csv, .json"):
        data.load_texts(prompts_config(data_files=str(path)))


def test_unknown_column_names_the_columns_there_are():
    with pytest.raises(PeftlabError) as error:
        data.load_texts(prompts_config(text_column="quote"))
    assert "dataset.text_column='quote' is not a column" in str(error.value)
    assert "columns: act, prompt" in str(error.value)


def test_real_tokens_counts_unpadded_ids():
    from datasets import Dataset

    assert data.real_tokens(Dataset.from_dict({"input_ids": [[1, 2, 3], [4]]})) == 4


def test_quotes_sample_is_valid_jsonl():
    lines = (SAMPLES_DIR / "quotes.jsonl").read_text().splitlines()
    assert all(set(json.loads(line)) == {"quote", "author", "tags"} for line in lines)
