import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoTokenizer

from peftlab import data, data_files
from peftlab.config import SAMPLES_DIR
from peftlab.errors import PeftlabError
from peftlab.schema import DatasetConfig
from peftlab.training import PadToLongest


def prompts_config(**overrides) -> DatasetConfig:
    values = {
        "name": "prompts-sample",
        "data_files": str(SAMPLES_DIR / "prompts.csv"),
        "text_column": "prompt",
    }
    return DatasetConfig(**{**values, **overrides})


def test_shipped_samples_follow_the_hub_datasets_schemas():
    prompts = data_files.read(prompts_config()).table
    quotes = data_files.read(
        DatasetConfig(name="q", data_files=str(SAMPLES_DIR / "quotes.jsonl"), text_column="quote")
    ).table
    assert list(prompts.columns) == ["act", "prompt"] and len(prompts) >= 80
    assert list(quotes.columns) == ["quote", "author", "tags"] and len(quotes) >= 80
    assert all(isinstance(tags, list) and tags for tags in quotes["tags"])


def texts(rows) -> list[str]:
    return [example.reference for example in rows]


def test_split_is_disjoint_deterministic_and_takes_first_and_last_rows():
    cfg = prompts_config(train_rows=50, eval_rows=30)
    rows = texts(data.load_examples(cfg).rows)
    (train, held_out), (again, held_out_again) = data.split(rows, cfg), data.split(rows, cfg)
    assert train == rows[:50] == again
    assert held_out == rows[-30:] == held_out_again


def test_a_split_seed_shuffles_reproducibly_and_disjointly():
    rows = texts(data.load_examples(prompts_config()).rows)
    train, held_out = data.split(rows, prompts_config(train_rows=50, eval_rows=30, split_seed=7))
    again, held_out_again = data.split(rows, prompts_config(train_rows=50, eval_rows=30,
                                                            split_seed=7))  # fmt: skip
    other, _ = data.split(rows, prompts_config(train_rows=50, eval_rows=30, split_seed=8))
    assert (train, held_out) == (again, held_out_again)
    assert train != rows[:50] and train != other
    assert not set(train) & set(held_out) and len(set(train) | set(held_out)) == 80


def test_a_separate_held_out_file_is_read_as_the_held_out_rows(tmp_path: Path):
    path = tmp_path / "held_out.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"held out {i}"}) + "\n" for i in range(5)))
    cfg = prompts_config(train_rows=20, eval_rows=4, eval_data_files=str(path))
    splits = data.load_splits(cfg)
    assert texts(splits.eval) == [f"held out {i}" for i in range(4)]
    assert texts(splits.train) == texts(data.load_examples(cfg).rows)[:20]
    every_row = data.load_splits(prompts_config(eval_rows=4, eval_data_files=str(path)))
    assert texts(every_row.train) == texts(data.load_examples(cfg).rows)  # none held out of it
    with pytest.raises(PeftlabError, match=r"dataset.eval_rows=6 exceeds the 5 usable rows of "):
        data.load_splits(prompts_config(eval_rows=6, eval_data_files=str(path)))
    with pytest.raises(PeftlabError, match=r"^dataset.eval_data_files='.*nope.csv': no such file"):
        data.check(prompts_config(eval_data_files=str(tmp_path / "nope.csv")))


def test_by_default_every_row_not_held_out_is_trained_on():
    cfg = prompts_config(eval_rows=30)
    rows = texts(data.load_examples(cfg).rows)
    train, held_out = data.split(rows, cfg)
    assert (train, held_out) == (rows[:-30], rows[-30:])
    shuffled, shuffled_out = data.split(rows, prompts_config(eval_rows=30, split_seed=7))
    assert sorted(shuffled + shuffled_out) == sorted(rows) and len(shuffled_out) == 30
    with pytest.raises(PeftlabError, match=rf"dataset.eval_rows={len(rows)} leaves no row to "):
        data.split(rows, prompts_config(eval_rows=len(rows)))


def test_too_many_rows_asked_for_is_an_error_naming_both_keys():
    cfg = prompts_config(train_rows=80, eval_rows=30)
    with pytest.raises(PeftlabError, match=r"dataset.train_rows=80 \+ dataset.eval_rows=30"):
        data.split(data.load_examples(cfg).rows, cfg)


def test_every_example_ends_in_eos_which_stays_in_the_labels(tiny_llama: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.pad_token = "<pad>"
    cfg = prompts_config(train_rows=8, eval_rows=4, max_length=16)
    splits = data.load_tokenized(cfg, tokenizer)
    rows = splits.train["input_ids"]
    assert all(row[-1] == tokenizer.eos_token_id and len(row) <= 16 for row in rows)
    assert max(len(row) for row in rows) == 16  # long texts are cut, not dropped
    batch = PadToLongest(tokenizer.pad_token_id)(list(splits.train))
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
    assert texts(data.load_examples(cfg).rows) == list(rows["text"])


def test_empty_texts_are_dropped(tmp_path: Path):
    path = tmp_path / "gaps.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["text"], ["kept"], [""], ["   "], ["also kept"]])
    cfg = DatasetConfig(name="gaps", data_files=str(path), text_column="text")
    assert texts(data.load_examples(cfg).rows) == ["kept", "also kept"]


def test_missing_file_is_a_one_line_error(tmp_path: Path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(PeftlabError, match=f"dataset.data_files='{missing}': no such file"):
        data.load_examples(prompts_config(data_files=str(missing)))


def test_unsupported_file_type_lists_the_allowed_ones(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(PeftlabError, match=r"unsupported file type '.txt'; allowed: .csv, .json"):
        data.load_examples(prompts_config(data_files=str(path)))


def test_unknown_column_names_the_columns_there_are():
    with pytest.raises(PeftlabError) as error:
        data.load_examples(prompts_config(text_column="quote"))
    assert "dataset.text_column='quote' is not a column" in str(error.value)
    assert "columns: act, prompt" in str(error.value)


def test_real_tokens_counts_unpadded_ids():
    from datasets import Dataset

    assert data.real_tokens(Dataset.from_dict({"input_ids": [[1, 2, 3], [4]]})) == 4


def test_quotes_sample_is_valid_jsonl():
    lines = (SAMPLES_DIR / "quotes.jsonl").read_text().splitlines()
    assert all(set(json.loads(line)) == {"quote", "author", "tags"} for line in lines)


def load(tmp_path: Path, name: str, content: bytes | str, **overrides) -> data.Examples:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return data.load_examples(DatasetConfig(name="f", data_files=str(path), text_column="text",
                                         **overrides))  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty.csv': the file is empty"),
        ("blank.jsonl", b"\n  \n", "blank.jsonl': the file is empty"),
        ("image.csv", b"\x89PNG\r\n\x1a\n\x00\x00", "image.csv' line 3: a binary file, not text"),
        ("latin1.csv", "text\nok\ncaf\xe9\n".encode("latin-1"),
         "latin1.csv' line 3: not UTF-8 text (byte 0xe9); save the file as UTF-8"),
        ("header.csv", "text,id\n", "header.csv': no rows (only a header"),
        ("broken.jsonl", '{"text": "a"}\n{"text": "b"\n{"text": "c"}\n',
         "broken.jsonl' line 2: not valid JSON (Expecting ',' delimiter); fix the line, or set "
         "dataset.on_bad_lines=skip"),
        ("broken.json", '[{"text": "a"},\n {"text": }]', "broken.json' line 2: not valid JSON"),
        ("numbers.csv", "text,id\n1,a\n2,b\n", "text' holds 1 (int), not text, in row 1 of "),
        ("mixed.jsonl", '{"text": "a"}\n{"text": 7}\n', "row 2 of "),
        ("nulls.jsonl", '{"text": null}\n{"text": ""}\n', "every row of "),
        ("fields.csv", 'text,id\n"a",1\nb,2,3\n"c",4\n',
         "fields.csv' line 3: 3 fields where the header has fewer; quote fields that hold commas, "
         "or set dataset.on_bad_lines=skip"),
    ],
)  # fmt: skip
def test_a_faulty_file_is_one_line_naming_the_file_and_line(tmp_path, name, content, message):
    with pytest.raises(PeftlabError) as error:
        load(tmp_path, name, content)
    assert message in str(error.value)
    assert str(error.value).startswith(("dataset.data_files=", "dataset.text_column="))
    assert "\n" not in str(error.value)


def test_a_parquet_file_without_the_column_names_the_columns(tmp_path: Path):
    path = tmp_path / "rows.parquet"
    pd.DataFrame({"prompt": ["a", "b"], "id": [1, 2]}).to_parquet(path)
    with pytest.raises(PeftlabError, match=r"'text' is not a column of .*rows.parquet; columns: "
                                           r"prompt, id"):  # fmt: skip
        data.load_examples(DatasetConfig(name="p", data_files=str(path), text_column="text"))


def test_a_space_after_the_comma_before_a_quoted_field_reads_as_intended(tmp_path: Path):
    content = 'act,text\nCoach, "I want you to act as a coach, a good one."\nPoet,"Write."\n'
    assert texts(load(tmp_path, "spaced.csv", content).rows) == [
        "I want you to act as a coach, a good one.",
        "Write.",
    ]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("fields.csv", 'text,id\n"a",1\nb,2,3\n"c",4\n'),
        ("broken.jsonl", '{"text": "a"}\n{"text": "b"\n{"text": "c"}\n'),
    ],
)
def test_with_on_bad_lines_skip_bad_rows_are_left_out_and_counted(tmp_path, name, content):
    examples = load(tmp_path, name, content, on_bad_lines="skip")
    assert texts(examples.rows) == ["a", "c"]
    assert examples.skipped_lines == 1
