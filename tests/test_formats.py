"""Every data format through the same tests: rows to examples, labels on the answers, every PEFT
method trained on it, and batched generation equal to one prompt at a time.

A new format adds one row to FORMATS (tests/helpers/matrices.py); every test here then runs for
it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.configs import ROOT, compose_config, in_process_overrides, tiny_overrides
from helpers.datasets import write_chats
from helpers.matrices import CORE_METHODS, FORMATS, METHODS, PATH_METHODS
from helpers.measures import answers
from helpers.tiny_models import randomize_adapter
from transformers import AutoTokenizer

from peftlab import data, formats, generation, modeling, scoring, training
from peftlab.config import SAMPLES_DIR
from peftlab.errors import PeftlabError
from peftlab.schema import DatasetConfig, to_settings


def test_every_format_has_a_row_here():
    assert set(formats.REGISTRY) == set(FORMATS)


def dataset_config(**values) -> DatasetConfig:
    # The tiny tokenizer spells a chat template's markers byte by byte: long rows.
    defaults = {"name": "d", "train_rows": 8, "eval_rows": 4, "max_length": 256}
    return DatasetConfig(**{**defaults, **values})


def composed_dataset(*overrides: str) -> DatasetConfig:
    """The dataset section of the real config tree with ``overrides``."""
    unused = ["tracking.uri=x", "tracking.artifact_location=x", "output_dir=x"]
    return to_settings(compose_config([*unused, *overrides])).dataset


def task_config(**values) -> DatasetConfig:
    fields = {**vars(composed_dataset("dataset=prompts-task")), "train_rows": 8, "eval_rows": 4}
    return DatasetConfig(**{**fields, **values})


@pytest.fixture(scope="module")
def tokenizer(tiny_chat_llama: Path):
    return AutoTokenizer.from_pretrained(tiny_chat_llama)


def test_completion_rows_learn_only_the_answer_then_eos(tokenizer):
    cfg = task_config()
    example = data.load_examples(cfg).rows[0]
    assert example.fields == {"act": "Travel Planner"}
    prompt = formats.of(cfg).prompt(example, tokenizer)
    assert prompt == "Role: Travel Planner\nPrompt:\n"
    train = data.load_tokenized(cfg, tokenizer).train[0]
    prompt_ids = tokenizer(prompt)["input_ids"]
    # The prompt's ids are those a tuned model generates after: the prompt tokenized alone.
    assert train["input_ids"][: len(prompt_ids)] == prompt_ids
    assert train["labels"][: len(prompt_ids)] == [data.IGNORED] * len(prompt_ids)
    assert answers(train, tokenizer) == [example.reference + tokenizer.eos_token]


def test_quotes_task_joins_a_list_of_tags_by_commas_in_its_prompt(tokenizer):
    cfg = DatasetConfig(**{**vars(composed_dataset("dataset=quotes-task")), "max_length": 256})
    with open(SAMPLES_DIR / "quotes.jsonl") as f:
        by_quote = {row["quote"]: row for row in map(json.loads, f)}
    fmt = formats.of(cfg)
    rows = data.load_examples(cfg).rows
    assert len(rows) == len(by_quote)
    for example in rows:
        row = by_quote[example.reference]
        tags = ", ".join(row["tags"])
        expected = f"Author: {row['author']}\nTags: {tags}\nQuote:\n"
        assert fmt.prompt(example, tokenizer) == expected
    assert len(data.load_tokenized(cfg, tokenizer).train) == len(rows) - cfg.eval_rows  # it trains


def test_train_on_all_keeps_the_prompt_in_training_but_the_held_out_loss_on_answers(tokenizer):
    tokenized = data.load_tokenized(task_config(train_on="all"), tokenizer)
    assert tokenized.train[0]["labels"] == tokenized.train[0]["input_ids"]
    assert data.IGNORED in tokenized.eval[0]["labels"]


def test_chat_rows_learn_every_assistant_message_rendered_by_the_template(tokenizer, tmp_path):
    cfg = dataset_config(data_files=str(write_chats(tmp_path)), format="chat")
    example = data.load_examples(cfg).rows[0]
    tokenized = data.load_tokenized(cfg, tokenizer).train[0]
    assert answers(tokenized, tokenizer) == [
        "I want you to act as a poet.<|im_end|>\n</s>",
        "Act as a poet, then.<|im_end|>\n</s>",
    ]
    prompt = formats.of(cfg).prompt(example, tokenizer)
    assert prompt.endswith("<|im_start|>user\nAgain, please.<|im_end|>\n<|im_start|>assistant\n")
    assert example.reference == "Act as a poet, then."


def test_a_tokenizer_without_a_chat_template_is_one_line(tiny_llama: Path, tmp_path: Path):
    cfg = dataset_config(data_files=str(write_chats(tmp_path)), format="chat")
    plain = AutoTokenizer.from_pretrained(tiny_llama)
    with pytest.raises(PeftlabError, match=r"^dataset.format=chat: the tokenizer of .* has no chat "
                                           r"template; use a chat model's"):  # fmt: skip
        data.load_tokenized(cfg, plain)


def test_examples_that_do_not_fit_are_dropped_and_counted_never_cut(tokenizer, caplog):
    whole = data.load_tokenized(task_config(max_length=1000), tokenizer)
    fitting = data.load_tokenized(task_config(max_length=96), tokenizer)
    lengths = [len(row) for row in whole.train["input_ids"]]
    assert fitting.train["input_ids"] == [r for r in whole.train["input_ids"] if len(r) <= 96]
    assert fitting.dropped == sum(n > 96 for n in lengths) + sum(
        len(row) > 96 for row in whole.eval["input_ids"]
    )
    assert 0 < len(fitting.train) < len(whole.train)
    assert "Dropped" in caplog.text and "dataset.max_length=96" in caplog.text
    with pytest.raises(PeftlabError, match=r"^dataset.max_length=8: no train example fits"):
        data.load_tokenized(task_config(max_length=8), tokenizer)


# Every format for a method of each kind, a task for the methods that train in their own way
# (test_methods generates a batch as one at a time for every method).
@pytest.mark.parametrize(
    ("option", "fmt"),
    [(o, f) for o in PATH_METHODS for f in FORMATS if o in CORE_METHODS or f == "completion"],
)
def test_every_method_trains_on_every_format_and_generates_a_batch_as_one_at_a_time(
    option, fmt, tmp_path, request
):
    overrides, model_fixture = FORMATS[fmt]
    model_dir = request.getfixturevalue(model_fixture)
    if fmt == "chat":
        overrides = [*overrides, f"dataset.data_files={write_chats(tmp_path)}"]
    settings = to_settings(compose_config([
        *tiny_overrides(model_dir, tmp_path), *in_process_overrides(tmp_path), *overrides,
        f"peft={option}", *METHODS[option], "dataset.train_rows=8", "dataset.eval_rows=4",
        "dataset.max_length=256", "trainer.num_train_epochs=1", "generation.eval_batch_size=3",
    ]))  # fmt: skip
    loaded = modeling.load(settings.model)
    splits = data.load_tokenized(settings.dataset, loaded.tokenizer)
    args = training.training_arguments(settings.trainer, tmp_path / "trainer")
    torch.manual_seed(0)
    with settings.peft.attached(loaded.model, str(model_dir)) as peft_model:
        trainer = training.build_trainer(peft_model, loaded.tokenizer, args, splits.train)
        assert trainer.train().training_loss > 0
        assert training.evaluate_loss(peft_model, loaded.tokenizer, args, splits.eval) > 0
        examples = data.load_splits(settings.dataset).eval
        held_out = scoring.held_out(examples, settings.dataset, settings.generation,
                                    loaded.tokenizer)  # fmt: skip
        # Plain text has no prompts to hold out: its runs generate from the probe prompts only.
        assert (held_out is None) == (fmt == "text")
        prompts = list(settings.generation.prompts if held_out is None else held_out.prompts)
        randomize_adapter(peft_model)  # its outputs differ row by row: padding would show
        before = generation.prefix(peft_model)
        assert len({len(loaded.tokenizer(p)["input_ids"]) for p in prompts}) > 1
        model, tokenizer, gen = loaded.model, loaded.tokenizer, settings.generation
        batched = generation.complete(model, tokenizer, prompts, gen, before, gen.max_new_tokens)
        alone = [generation.generate(model, tokenizer, p, gen, before) for p in prompts]
    assert batched == alone
    assert len(set(batched)) > 1


def write(folder: Path, name: str, content: str) -> str:
    (folder / name).write_text(content)
    return str(folder / name)


def faults(folder: Path) -> list[tuple[list[str], str]]:
    """Overrides of a faulty dataset, and the start of its one-line error."""
    chat = ["dataset.format=chat", "dataset.train_rows=1", "dataset.eval_rows=1"]
    task = ["dataset=prompts-task"]
    user = {"role": "user", "content": "hi"}
    gap = write(folder, "gap.csv", "act,prompt\nPoet,Write.\nChef,\n")
    return [
        ([*chat, "dataset.data_files=" + write(folder, "flat.jsonl", '{"messages": "hi"}\n')],
         "dataset.messages_column='messages' holds str, not a list of {role, content} messages, "
         "in row 1 of "),
        ([*chat, "dataset.data_files=" + write(folder, "role.jsonl", json.dumps(
            {"messages": [user, {"role": "bot", "content": "x"}]}) + "\n")],
         "dataset.messages_column='messages': role 'bot' is not one of system, user, assistant, "
         "in row 1"),
        ([*chat, "dataset.data_files=" + write(folder, "last.jsonl", json.dumps(
            {"messages": [user]}) + "\n")],
         "dataset.messages_column='messages': the last message is not the assistant's"),
        ([*task, "dataset.prompt_template='Role: {act'"],
         "dataset.prompt_template='Role: {act' is not a template: expected '}' before end of "
         "string; write a literal brace as {{ or }}"),
        ([*task, "dataset.prompt_template='Role: {role}'"],
         "dataset.prompt_template='Role: {role}': {role} is not a column of "),
        ([*task, "dataset.completion_column=answer"],
         "dataset.completion_column='answer' is not a column of "),
        ([*task, f"dataset.data_files={gap}"],
         "dataset.completion_column='prompt' is empty, in row 2 of "),
    ]  # fmt: skip


def test_each_data_fault_is_one_line_before_any_model_loads(tmp_path: Path):
    for overrides, message in faults(tmp_path):
        cfg = composed_dataset(*overrides)
        with pytest.raises(PeftlabError) as error:
            data.check(cfg)
        assert str(error.value).startswith(message), overrides
        assert "\n" not in str(error.value)


def test_with_on_bad_lines_skip_empty_completions_are_left_out_and_counted(tmp_path: Path):
    path = write(tmp_path, "gap.csv", "act,prompt\nPoet,Write.\nChef,\nCoach,Go.\n")
    cfg = task_config(data_files=path, on_bad_lines="skip", train_rows=1, eval_rows=1)
    examples = data.load_examples(cfg)
    assert [e.reference for e in examples.rows] == ["Write.", "Go."]
    assert examples.skipped_lines == 1


# What a run loads once its inputs are found sound: seconds of imports a data fault goes without.
HEAVY = {"torch", "transformers", "peft", "mlflow"}


@pytest.mark.process
def test_train_py_answers_a_data_fault_in_seconds_without_a_run(tmp_path: Path):
    """One real process: the fault is found before torch, transformers, peft or MLflow load
    (Python's own account of the process's imports, ``-X importtime``, on its stderr)."""
    overrides, message = faults(tmp_path)[-1]
    process = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "train.py"), *overrides,
         f"hydra.run.dir={tmp_path}/run", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = process.stderr.strip().splitlines()
    imported = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    said = [line for line in lines if not line.startswith("import time:")]
    assert process.returncode == 1
    assert said == [f"error: {message}" + said[0].split(message, 1)[1]]
    assert "omegaconf" in imported and not HEAVY & imported
    assert not (tmp_path / "mlflow.db").exists()  # no store opened, no run left RUNNING
