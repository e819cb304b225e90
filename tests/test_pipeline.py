"""A whole run in-process on tiny models: what it trains, saves and logs."""

import csv
import errno
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import peft
import pytest
import torch
from helpers.configs import ROOT
from helpers.datasets import rows_csv
from helpers.measures import (
    general_text_loss,
    logged_adapter,
    logged_adapter_loss,
    real_tokens_per_epoch,
    reference_greedy,
)
from helpers.runners import run_tiny
from helpers.stores import store_runs
from mlflow.tracking import MlflowClient

from peftlab import modeling, names, training
from peftlab.config import SAMPLES_DIR, ModelConfig
from peftlab.errors import PeftlabError
from peftlab.methods.prompt_tuning import PromptTuning
from peftlab.shared import Shared

METRICS = {
    names.EVAL_LOSS_UNTUNED,
    names.EVAL_LOSS,
    names.EVAL_PERPLEXITY,
    names.TRAINABLE_PARAMS,
    names.TRAIN_RUNTIME,
    names.TRAIN_TOKENS_PER_SECOND,
    names.TRAIN_LOSS,
    names.ADAPTER_BYTES,
    names.PEAK_MEMORY_BYTES,
    names.EVAL_FORGETTING,
}


# Rows of 71 to 95 tokens with the tiny tokenizer (at 32, all are cut to 32): batches pad.
ROWS_OF_MANY_LENGTHS = "dataset.max_length=128"


@pytest.fixture(scope="module")
def bloom_run(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("bloom-run")
    return work, run_tiny(tiny_bloom, work, "peft.num_virtual_tokens=5", ROWS_OF_MANY_LENGTHS)


def test_run_is_logged_with_params_metrics_and_artifacts(bloom_run, tiny_bloom: Path):
    work, result = bloom_run
    client = MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["peft.num_virtual_tokens"] == "5"
    # A null trainer.learning_rate is logged as the method's own.
    assert float(run.data.params["trainer.learning_rate"]) == PromptTuning.learning_rate
    assert set(run.data.metrics) >= METRICS
    assert run.data.metrics[names.TRAINABLE_PARAMS] == 5 * 32
    reloaded = logged_adapter_loss(work, tiny_bloom, result.run_id, ROWS_OF_MANY_LENGTHS)
    assert run.data.metrics[names.EVAL_LOSS] == pytest.approx(reloaded, rel=1e-6)
    # Throughput counts the tokens trained on, padding not (2 epochs).
    seconds = run.data.metrics[names.TRAIN_RUNTIME]
    tokens = 2 * real_tokens_per_epoch(tiny_bloom, ROWS_OF_MANY_LENGTHS)
    assert run.data.metrics[names.TRAIN_TOKENS_PER_SECOND] * seconds == pytest.approx(tokens)
    # 16 rows, batch 4, 2 epochs, a loss every step: each curve has 8 points.
    for curve in (names.TRAIN_LOSS, "learning_rate", names.GRAD_NORM):
        assert len(client.get_metric_history(result.run_id, curve)) == 8
    rates = [m.value for m in client.get_metric_history(result.run_id, "learning_rate")]
    # The linear decay: falling by the same amount at every step, from at most the rate set.
    drops = [earlier - later for earlier, later in zip(rates, rates[1:], strict=False)]
    assert rates[0] <= PromptTuning.learning_rate and min(drops) > 0
    assert drops == pytest.approx([drops[0]] * len(drops))
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[names.EXPERIMENT_KIND_TAG] == "finetuning"
    # A checkpoint every epoch (the default), the latest kept: the second's, at step 8.
    assert [path.name for path in (work / "run" / "trainer").iterdir()] == ["checkpoint-8"]
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"adapter", names.SAMPLES_FILE, "environment"} <= artifacts
    adapter_files = {Path(a.path).name for a in client.list_artifacts(result.run_id, "adapter")}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= adapter_files


def test_eval_forgetting_is_the_general_texts_loss_tuned_minus_untuned(bloom_run, tiny_bloom):
    work, result = bloom_run
    (run,) = store_runs(work)[1]
    base = modeling.load(ModelConfig(name_or_path=str(tiny_bloom)))
    max_length = 128  # ROWS_OF_MANY_LENGTHS: the general text's rows are cut there too
    untuned = general_text_loss(base.model, base.tokenizer, max_length)
    tuned, tokenizer = logged_adapter(work, tiny_bloom, result.run_id, work / "general")
    forgetting = general_text_loss(tuned, tokenizer, max_length) - untuned
    assert forgetting != 0
    assert run.data.metrics[names.EVAL_FORGETTING] == pytest.approx(forgetting, abs=1e-5)
    assert run.data.metrics[names.PEAK_MEMORY_BYTES] > 0


def test_run_records_library_versions_device_and_packages(bloom_run):
    import datasets
    import mlflow
    import transformers

    work, result = bloom_run
    client = MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db")
    tags = client.get_run(result.run_id).data.tags
    # Each library's version as the imported module states it.
    modules = {"torch": torch, "transformers": transformers, "peft": peft, "datasets": datasets,
               "mlflow": mlflow}  # fmt: skip
    python = ".".join(map(str, sys.version_info[:3]))
    expected = {"python_version": python} | {
        f"{name}_version": module.__version__ for name, module in modules.items()
    }
    assert {key: tags.get(key) for key in expected} == expected
    if torch.cuda.is_available():
        assert tags[names.DEVICE_TAG] == torch.cuda.get_device_name(0)
    else:  # the CPU's model, as the kernel names it
        model = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        assert tags[names.DEVICE_TAG] == f"CPU: {model.group(1).strip()}"
    packages = Path(client.download_artifacts(result.run_id, names.REQUIREMENTS_FILE))
    lines = packages.read_text().splitlines()
    assert {f"{name}=={module.__version__}" for name, module in modules.items()} <= set(lines)
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==\S+", line) for line in lines)


def test_run_records_its_training_and_held_out_rows_as_datasets(bloom_run):
    work, result = bloom_run
    client = MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db")
    inputs = client.get_run(result.run_id).inputs.dataset_inputs
    by_context = {
        {tag.key: tag.value for tag in i.tags}["mlflow.data.context"]: i.dataset for i in inputs
    }
    assert sorted(by_context) == ["evaluation", "training"]
    sample = SAMPLES_DIR / "prompts.csv"
    for context, rows in (("training", 16), ("evaluation", 8)):
        dataset = by_context[context]
        assert dataset.name == "prompts-sample"
        assert json.loads(dataset.source)["uri"] == str(sample)
        assert json.loads(dataset.profile)["num_rows"] == rows
    assert by_context["training"].digest != by_context["evaluation"].digest


def test_samples_table_has_prompt_untuned_and_tuned(bloom_run):
    work, result = bloom_run
    client = MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db")
    table = client.load_table(
        experiment_id=client.get_run(result.run_id).info.experiment_id,
        artifact_file=names.SAMPLES_FILE,
        run_ids=[result.run_id],
    )
    assert list(table.columns[:3]) == ["prompt", "untuned", "tuned"]
    assert table["prompt"].tolist() == [s.prompt for s in result.samples]


def test_tiny_overfit_run_lowers_held_out_loss(tiny_llama: Path, tmp_path: Path):
    result = run_tiny(
        tiny_llama,
        tmp_path,
        "peft.num_virtual_tokens=8",
        "peft.prompt_tuning_init=RANDOM",
        "trainer.learning_rate=0.05",
        "trainer.num_train_epochs=8",
    )
    assert result.eval_loss < result.eval_loss_untuned - 0.05


def test_runs_sharing_model_and_data_compute_the_untuned_baseline_once(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    shared = Shared()  # as in a new process
    untuned = []  # the held-out rows' and the general text's, evaluated on the base model
    evaluate_loss = training.evaluate_loss

    def counted(model, *args):
        if not isinstance(model, peft.PeftModel):
            untuned.append(args[-1])
        return evaluate_loss(model, *args)

    monkeypatch.setattr(training, "evaluate_loss", counted)
    first = run_tiny(tiny_llama, tmp_path / "a", shared=shared)
    second = run_tiny(tiny_llama, tmp_path / "b", "peft.prompt_tuning_init=RANDOM", shared=shared)
    assert len(untuned) == 2
    assert second.eval_loss_untuned == first.eval_loss_untuned
    assert [s.untuned for s in second.samples] == [s.untuned for s in first.samples]

    # Other held-out rows: measured again; the same general text: not.
    other_data = run_tiny(tiny_llama, tmp_path / "c", "dataset.eval_rows=7", shared=shared)
    assert len(untuned) == 3 and len(untuned[-1]) == 7
    assert other_data.eval_loss_untuned != first.eval_loss_untuned


def test_a_full_disk_while_saving_the_adapter_fails_the_run_keeping_nothing_half_written(
    tiny_bloom: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def disk_full(self, directory, **kwargs):
        (Path(directory) / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(peft.PeftModel, "save_pretrained", disk_full)
    with pytest.raises(PeftlabError) as error:
        run_tiny(tiny_bloom, tmp_path / "checkpoints")  # the first checkpoint hits it
    assert str(error.value).startswith("training stopped on a file error in ")
    assert "(No space left on device); free some space, or set trainer.save_strategy=no" in str(
        error.value
    )
    with pytest.raises(PeftlabError) as error:
        run_tiny(tiny_bloom, tmp_path, "trainer.save_strategy=no")  # then the adapter does
    run_dir = tmp_path / "run"
    assert str(error.value) == (
        f"could not save the adapter to {run_dir / 'adapter'}: No space left on device; nothing "
        "half-written was kept: free some space and run again"
    )
    assert not [p.name for p in run_dir.iterdir() if "adapter" in p.name]
    for work in (tmp_path, tmp_path / "checkpoints"):
        (run,) = MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db").search_runs(["1"])
        assert run.info.status == "FAILED"


def test_a_task_run_scores_its_held_out_generations_and_says_so(tiny_llama, tmp_path, capsys):
    from peft import PeftModel
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.metrics import CHRF
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftlab import console

    result = run_tiny(tiny_llama, tmp_path, "dataset=prompts-task", "dataset.max_length=160",
                      "generation.eval_rows=3")  # fmt: skip
    written = json.loads((tmp_path / "run" / names.GENERATIONS_TABLE).read_text())
    # The first 3 (generation.eval_rows) of the 8 held-out rows, the file's last, in the task's
    # template (conf/dataset/prompts-task.yaml), read here from the CSV itself.
    with (SAMPLES_DIR / "prompts.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))[-8:][:3]
    assert written["prompt"] == [f"Role: {row['act']}\nPrompt:\n" for row in rows]
    assert written["reference"] == [row["prompt"] for row in rows]
    # What the base model and the saved adapter write, decoded here token by token.
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    untuned = [reference_greedy(base, tokenizer, p, 8, 1.5) for p in written["prompt"]]
    tuned_model = PeftModel.from_pretrained(base, tmp_path / "run" / names.ADAPTER_DIR).eval()
    tuned = [reference_greedy(tuned_model, tokenizer, p, 8, 1.5) for p in written["prompt"]]
    assert (written["untuned"], written["tuned"]) == (untuned, tuned)
    # Scored by rouge-score and sacrebleu themselves, against the CSV's answers.
    rouge, references = RougeScorer(["rougeL"], use_stemmer=True), written["reference"]

    def rouge_rows(outputs: list[str]) -> list[float]:
        pairs = zip(references, outputs, strict=True)
        return [100 * rouge.score(ref, out)["rougeL"].fmeasure for ref, out in pairs]

    def exact(outputs: list[str]) -> float:
        pairs = zip(references, outputs, strict=True)
        return 100 * sum(out.strip() == ref.strip() for ref, out in pairs) / len(outputs)

    expected = {
        model: {
            "rougeL": sum(rouge_rows(outputs)) / 3,
            "chrf": CHRF().corpus_score(outputs, [references]).score,
            "exact_match": exact(outputs),
        }
        for model, outputs in (("untuned", untuned), ("tuned", tuned))
    }
    assert written["rougeL"] == pytest.approx(rouge_rows(tuned))
    assert written["rougeL_untuned"] == pytest.approx(rouge_rows(untuned))
    (run,) = store_runs(tmp_path)[1]
    logged = {name: run.data.metrics[f"eval_{name}"] for name in expected["tuned"]}
    assert logged == pytest.approx(expected["tuned"])
    logged = {name: run.data.metrics[f"eval_{name}_untuned"] for name in expected["untuned"]}
    assert logged == pytest.approx(expected["untuned"])
    console.report(result)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("Held-out gen"))
    before, after = expected["untuned"]["rougeL"], expected["tuned"]["rougeL"]
    assert f"rougeL {before:.2f} -> {after:.2f}" in line


def test_skipped_rows_are_counted_on_the_run(tiny_bloom: Path, tmp_path: Path, caplog):
    data = rows_csv(tmp_path / "rows.csv", bad_line=True)
    with caplog.at_level(logging.WARNING, logger="peftlab.data"):
        run_tiny(tiny_bloom, tmp_path, f"dataset.data_files={data}", "dataset.text_column=text",
                 "dataset.on_bad_lines=skip")  # fmt: skip
    assert f"Skipped 1 rows of {data} that did not parse or hold no example" in caplog.messages
    (run,) = store_runs(tmp_path)[1]
    assert run.data.metrics[names.DATASET_SKIPPED_LINES] == 1


# A task run with options a user sets: a name, no held-out generations, no checkpoints, no
# forgetting measured, and a max_length that some of the role-play rows (prompt and answer) do
# not fit.
OPTIONS = ["dataset=prompts-task", "dataset.max_length=100", "tracking.run_name=my-task",
           "generation.eval_rows=0", "trainer.save_strategy=no",
           "generation.general_data_files=null"]  # fmt: skip


@pytest.fixture(scope="module")
def options_run(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory):
    from mlflow.tracking.fluent import run_id_to_system_metrics_monitor as samplers

    work = tmp_path_factory.mktemp("options-run")
    sampled = []  # whether MLflow sampled the machine's use while the run lasted
    real_end = mlflow.end_run

    def end_run(*args, **kwargs):
        sampled.append(samplers.get(mlflow.active_run().info.run_id) is not None)
        return real_end(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mlflow, "end_run", end_run)
        result = run_tiny(tiny_llama, work, *OPTIONS)
    (run,) = store_runs(work)[1]
    return work, result, run, sampled


def test_run_name_names_the_run(options_run):
    _, _, run, _ = options_run
    assert run.info.run_name == "my-task"


def test_eval_rows_0_generates_and_scores_no_held_out_rows(options_run):
    work, result, run, _ = options_run
    client = MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db")
    assert names.GENERATIONS_TABLE not in {a.path for a in client.list_artifacts(run.info.run_id)}
    scores = {key for key in run.data.metrics if key.startswith(names.SCORE_PREFIX)}
    assert scores == {names.EVAL_LOSS, names.EVAL_LOSS_UNTUNED, names.EVAL_PERPLEXITY}


def test_general_data_files_null_measures_no_forgetting(options_run):
    _, _, run, _ = options_run
    assert names.EVAL_FORGETTING not in run.data.metrics
    assert run.data.metrics[names.PEAK_MEMORY_BYTES] > 0


def test_save_strategy_no_writes_no_checkpoint(options_run):
    work, _, _, _ = options_run
    checkpoints = list((work / "run").rglob("checkpoint-*"))
    assert checkpoints == []
    assert (work / "run" / names.ADAPTER_DIR / "adapter_model.safetensors").is_file()


def test_system_metrics_are_sampled_by_default(options_run):
    _, _, _, sampled = options_run
    assert sampled == [True]


def test_rows_that_do_not_fit_are_dropped_and_counted(options_run, tiny_llama: Path):
    from transformers import AutoTokenizer

    _, _, run, _ = options_run
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    with open(SAMPLES_DIR / "prompts.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    used = rows[:16] + rows[-8:]  # the tiny runs' train_rows and eval_rows

    def length(row) -> int:  # the prompt with its BOS, the answer with its EOS
        prompt = tokenizer(f"Role: {row['act']}\nPrompt:\n").input_ids
        return len(prompt) + len(tokenizer(row["prompt"], add_special_tokens=False).input_ids) + 1

    too_long = sum(length(row) > 100 for row in used)
    assert 0 < too_long < len(used)
    assert run.data.metrics[names.DATASET_DROPPED] == too_long


def test_run_is_tagged_with_the_commit_it_ran_from(options_run):
    _, _, run, _ = options_run
    head = subprocess.run(["git", "log", "-1", "--format=%H"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    assert len(head) == 40
    assert run.data.tags[names.GIT_COMMIT_TAG] == head


def test_a_job_run_again_in_its_folder_with_other_settings_starts_a_new_run(
    tiny_bloom: Path, tmp_path: Path, caplog
):
    """A sweep started again into the same folder with other values: the folder's unfinished
    run (KILLED, its checkpoint kept) is another job's, passed over and left as it was; with
    the same settings it is resumed (a requeued job)."""
    first = run_tiny(tiny_bloom, tmp_path, "trainer.num_train_epochs=1")
    client, _ = store_runs(tmp_path)
    client.set_terminated(first.run_id, "KILLED")  # as an interrupt leaves it
    rate = client.get_run(first.run_id).data.params["trainer.learning_rate"]
    shutil.rmtree(tmp_path / "run" / ".hydra")  # Hydra writes each job's config afresh
    with caplog.at_level(logging.WARNING, logger="peftlab"):
        other = run_tiny(
            tiny_bloom, tmp_path, "trainer.num_train_epochs=1", "trainer.learning_rate=0.0123"
        )
    assert other.run_id != first.run_id
    assert client.get_run(first.run_id).info.status == "KILLED"
    assert f"ran other settings (trainer.learning_rate: {rate} -> 0.0123)" in caplog.text
    client.set_terminated(other.run_id, "KILLED")
    shutil.rmtree(tmp_path / "run" / ".hydra")
    again = run_tiny(
        tiny_bloom, tmp_path, "trainer.num_train_epochs=1", "trainer.learning_rate=0.0123"
    )
    assert again.run_id == other.run_id
    assert client.get_run(other.run_id).info.status == "FINISHED"
