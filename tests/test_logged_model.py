"""The logged model of a run: loads with MLflow, predicts the run's samples, serves over HTTP."""

import os
import sys
from pathlib import Path

import httpx
import mlflow
import pytest
from helpers.cluster import free_port
from helpers.runners import run_tiny
from helpers.servers import serving
from helpers.stores import sweep_parts

from peftlab import names

PROMPT = "I want you to act as a motivational coach."


@pytest.fixture(scope="module")
def lora_run(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("logged-model")
    result = run_tiny(tiny_llama, work, "peft=lora", "peft.r=4", f"generation.prompts=[{PROMPT!r}]")
    return f"sqlite:///{work}/mlruns/mlflow.db", result


@pytest.fixture(scope="module")
def loaded(lora_run):
    uri, result = lora_run
    mlflow.set_tracking_uri(uri)
    return mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")


def test_logged_model_predicts_the_runs_samples(lora_run, loaded):
    _, result = lora_run
    (sample,) = result.samples
    assert loaded.predict([PROMPT]) == [sample.tuned]
    assert loaded.predict(PROMPT) == [sample.tuned]
    assert loaded.predict([PROMPT, PROMPT]) == [sample.tuned, sample.tuned]


def test_generation_settings_are_params_at_predict_time(lora_run, loaded):
    _, result = lora_run
    (sample,) = result.samples
    params = loaded.metadata.get_params_schema().to_dict()
    assert {p["name"]: p["default"] for p in params}["max_new_tokens"] == 8  # the run's setting
    shorter = loaded.predict([PROMPT], params={"max_new_tokens": 2})[0]
    assert shorter != sample.tuned
    assert sample.tuned.startswith(shorter)


def test_do_sample_at_predict_time_samples(lora_run, loaded):
    import torch

    _, result = lora_run
    (sample,) = result.samples

    def sampled(seed: int) -> str:
        torch.manual_seed(seed)
        return loaded.predict([PROMPT], params={"do_sample": True, "max_new_tokens": 12})[0]

    draws = {sampled(seed) for seed in range(3)}
    assert len(draws) > 1  # the seed's draws, not the one greedy answer
    assert sampled(0) == sampled(0)
    assert loaded.predict([PROMPT], params={"do_sample": False}) == [sample.tuned]


def test_logged_model_references_the_base_model_instead_of_copying_it(lora_run):
    uri, result = lora_run
    files = mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model", tracking_uri=uri)
    sizes = {p.relative_to(files).as_posix(): p.stat().st_size for p in Path(files).rglob("*")}
    assert "artifacts/run/adapter/adapter_model.safetensors" in sizes
    assert "artifacts/run/.hydra/config.yaml" in sizes
    assert not any(name.endswith(("model.safetensors", ".gguf", ".bin")) for name in sizes
                   if "adapter" not in name)  # fmt: skip


@pytest.mark.process
def test_mlflow_models_serve_answers_with_the_same_text(lora_run):
    uri, result = lora_run
    (sample,) = result.samples
    base = f"http://127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{result.run_id}/model",
        "--env-manager", "local", "-h", "127.0.0.1", "-p", base.rsplit(":", 1)[1],
    ]  # fmt: skip
    # The scoring server runs `uvicorn` from PATH: the environment's bin/, as `make serve` sets.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    with serving(command, f"{base}/ping", env={"MLFLOW_TRACKING_URI": uri, "PATH": path}):
        answer = httpx.post(f"{base}/invocations", json={"inputs": [PROMPT]}, timeout=120)
        shorter = httpx.post(
            f"{base}/invocations",
            json={"inputs": [PROMPT], "params": {"max_new_tokens": 2}},
            timeout=120,
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [sample.tuned]}
    assert sample.tuned.startswith(shorter.json()["predictions"][0])


def test_a_task_runs_model_takes_its_columns_and_writes_its_scored_generations(method_sweep):
    """The model of a run on prompts-task takes ``act`` and makes the run's own prompt: it
    writes what the run wrote for its held-out rows."""
    import json

    import pandas as pd

    client, _, children = sweep_parts(method_sweep)
    (lora,) = [c for c in children if c.data.params["peft.method"] == "lora"]
    mlflow.set_tracking_uri(client.tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{lora.info.run_id}/model")
    assert model.metadata.get_input_schema().input_names() == ["act"]
    table = json.loads(Path(client.download_artifacts(lora.info.run_id, names.GENERATIONS_TABLE))
                       .read_text())  # fmt: skip
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]][:3]
    acts = [row["prompt"].removeprefix("Role: ").split("\n")[0] for row in rows]
    written = model.predict(pd.DataFrame({"act": acts}), params={"max_new_tokens": 8})
    assert written == [row["tuned"] for row in rows]


def test_a_chat_runs_model_takes_user_and_answers_in_the_chat_template(
    tiny_chat_llama: Path, tmp_path: Path
):
    import pandas as pd
    from helpers.datasets import write_chats
    from helpers.measures import reference_greedy
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    chats = write_chats(tmp_path)
    result = run_tiny(tiny_chat_llama, tmp_path, "dataset.format=chat", "dataset.name=chats",
                      f"dataset.data_files={chats}", "dataset.max_length=256",
                      "dataset.train_rows=4", "dataset.eval_rows=2")  # fmt: skip
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    assert model.metadata.get_input_schema().input_names() == ["user"]
    asked = pd.DataFrame({"user": ["Name a colour."]})
    written = model.predict(asked, params={"max_new_tokens": 6})
    # The user's message in ChatML, as the tiny tokenizer's template writes it, then the
    # run's adapter decoding greedily.
    prompt = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_llama)
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_llama)
    adapter = PeftModel.from_pretrained(base, tmp_path / "run" / names.ADAPTER_DIR).eval()
    assert written == [reference_greedy(adapter, tokenizer, prompt, 6, 1.0)]
