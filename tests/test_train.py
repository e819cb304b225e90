"""train.py as users run it: exit codes, console, and what lands in MLflow."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.configs import ROOT, tiny_overrides
from helpers.runners import imported_top_level, run_train
from helpers.stores import store_runs

from peftlab import names

pytestmark = pytest.mark.process  # train.py as a user runs it

ENV_VALUE = "value-from-the-environment"


@pytest.fixture(scope="module")
def cli_run(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("cli")
    # A value from the environment, as a password would come (${oc.env:VAR}).
    from_env = "tracking.run_name=${oc.env:PEFTLAB_TEST_VALUE}"
    env = {"PEFTLAB_TEST_VALUE": ENV_VALUE}
    return work, run_train(*tiny_overrides(tiny_bloom, work), from_env, cwd=work, env=env)


def test_train_prints_losses_samples_and_how_to_open_the_run(cli_run):
    _, result = cli_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Held-out eval loss: untuned " in result.stdout
    assert "Prompt:  I want you to act as a motivational coach." in result.stdout
    assert "make ui" in result.stdout


def test_train_leaves_one_finished_run_with_config_and_tags(cli_run):
    work, result = cli_run
    client, runs = store_runs(work)
    assert [run.info.status for run in runs] == ["FINISHED"]
    run = runs[0]
    assert run.info.run_id in result.stdout
    assert run.data.tags["dataset"] == "prompts-sample"
    assert run.data.tags["model"] == "smollm2-135m"  # the group choice, overridden keys aside
    hydra_files = {
        Path(a.path).name for a in client.list_artifacts(run.info.run_id, names.CONFIG_DIR)
    }
    assert {names.CONFIG_FILE, "overrides.yaml"} <= hydra_files
    assert (work / "outputs" / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_an_oc_env_value_is_used_but_kept_out_of_hydras_saved_files(cli_run):
    work, _ = cli_run
    client, (run,) = store_runs(work)
    assert run.info.run_name == ENV_VALUE  # resolved where the run uses it
    logged = client.download_artifacts(run.info.run_id, names.CONFIG_DIR, str(work / "logged"))
    saved = [*(work / "outputs" / "run" / names.CONFIG_DIR).iterdir(), *Path(logged).iterdir()]
    assert {path.name for path in saved} >= {names.CONFIG_FILE, "overrides.yaml"}
    for path in saved:
        assert ENV_VALUE not in path.read_text(), path
    assert "${oc.env:PEFTLAB_TEST_VALUE}" in (Path(logged) / "overrides.yaml").read_text()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("dataset.data_files=/nonexistent/rows.csv", "dataset.data_files='/nonexistent/rows.csv'"),
        ("dataset.text_column=quote", "dataset.text_column='quote' is not a column"),
        ("peft.num_virtual_tokens=0", "peft.num_virtual_tokens=0 is not allowed"),
    ],
)
def test_bad_input_is_one_error_line_and_no_running_run(tiny_bloom, tmp_path, override, expected):
    result = run_train(*tiny_overrides(tiny_bloom, tmp_path), override, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {expected}")
    assert "Traceback" not in result.stderr
    # Answered before any store is opened: no run at all, RUNNING or otherwise.
    assert not (tmp_path / "mlruns").exists()


def test_unknown_init_names_key_value_and_allowed_values(tiny_bloom, tmp_path):
    result = run_train(
        *tiny_overrides(tiny_bloom, tmp_path), "peft.prompt_tuning_init=GAUSSIAN", cwd=tmp_path
    )
    assert result.returncode != 0
    assert "peft.prompt_tuning_init=GAUSSIAN" in result.stderr
    allowed = result.stderr.split("expected one of ")[1].splitlines()[0]
    assert all(name in allowed for name in ("RANDOM", "TEXT", "SAMPLE_VOCAB"))
    assert not (tmp_path / "mlruns").exists()  # rejected at compose time, before any run


def test_uncached_hub_model_offline_fails_fast_with_the_way_out(tiny_bloom, tmp_path):
    tiny_data_and_store = [o for o in tiny_overrides(tiny_bloom, tmp_path) if "model." not in o]
    result = run_train(
        *tiny_data_and_store,
        "model=bloomz-560m",
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model.name_or_path='bigscience/bloomz-560m'")
    assert "model=smollm2-135m" in last
    _, runs = store_runs(tmp_path)
    assert [run.info.status for run in runs] == ["FAILED"]


HEAVY = ("torch", "transformers", "peft", "mlflow", "datasets")


@pytest.mark.parametrize(
    "command",
    [
        [str(ROOT / "train.py"), "peft=lora", "peft.r=0"],
        [str(ROOT / "train.py"), "--help"],
        ["-m", "peftlab.cli", "--help"],
    ],
)
def test_config_errors_and_help_answer_before_heavy_libraries_load(command, tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *command], cwd=tmp_path, capture_output=True, text=True
    )
    assert not imported_top_level(result.stderr) & set(HEAVY)
    if "peft.r=0" in command:
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1] == (
            "error: peft.r=0 is not allowed: an integer >= 1"
        )
    else:
        assert result.returncode == 0
        assert "peftlab" in result.stdout or "== Config ==" in result.stdout
