"""peftlab compare --register: the best run's model as a version, 'champion' on the best."""

import json
import shutil
from pathlib import Path

import mlflow
import pytest
from helpers.runners import peftlab
from helpers.stores import store_runs

from peftlab import names

NAME = "prompts"


@pytest.fixture
def store(sweep_run: Path, tmp_path: Path):
    """A copy of the sweep's store (its artifacts stay where they are), under ``tmp_path``."""
    (tmp_path / "mlruns").mkdir()
    shutil.copy(sweep_run / "mlruns" / "mlflow.db", tmp_path / "mlruns" / "mlflow.db")
    client, runs = store_runs(tmp_path)
    children = [r for r in runs if names.EVAL_LOSS in r.data.metrics]
    return client, sorted(children, key=lambda r: r.data.metrics[names.EVAL_LOSS])


def register(work: Path) -> str:
    result = peftlab("compare", "--experiment", "peftlab", "--register", NAME, cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("Registered")]
    return line


def champion_run(client) -> str:
    return client.get_model_version_by_alias(NAME, "champion").run_id


def test_champion_moves_only_to_a_better_run(store, tmp_path: Path):
    client, (best, second, *_) = store
    client.delete_run(best.info.run_id)  # an earlier comparison, without the best run
    assert "now models:/prompts@champion" in register(tmp_path)
    assert champion_run(client) == second.info.run_id

    client.restore_run(best.info.run_id)  # a later one that beats it: the alias moves
    assert register(tmp_path).startswith(f"Registered {NAME} v2: run {best.info.run_name}")
    assert champion_run(client) == best.info.run_id

    client.delete_run(best.info.run_id)  # a later one that doesn't: the alias stays
    line = register(tmp_path)
    assert "champion stays on v2" in line
    assert champion_run(client) == best.info.run_id
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 2  # no duplicate version


def test_champion_loads_and_predicts_the_best_runs_samples(store, tmp_path: Path):
    client, (best, *_) = store
    register(tmp_path)
    table = json.loads(
        Path(
            client.download_artifacts(best.info.run_id, names.SAMPLES_FILE, str(tmp_path))
        ).read_text()
    )
    first = dict(zip(table["columns"], table["data"][0], strict=True))
    mlflow.set_tracking_uri(client.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert model.predict([first["prompt"]]) == [first["tuned"]]


def test_with_a_higher_is_better_metric_the_champion_moves_to_a_higher_score(
    method_sweep: Path, tmp_path: Path
):
    (tmp_path / "mlruns").mkdir()
    shutil.copy(method_sweep / "mlruns" / "mlflow.db", tmp_path / "mlruns" / "mlflow.db")
    client, runs = store_runs(tmp_path)
    scored = sorted((r for r in runs if "eval_chrf" in r.data.metrics),
                    key=lambda r: -r.data.metrics["eval_chrf"])  # fmt: skip
    assert scored[0].data.metrics["eval_chrf"] > scored[1].data.metrics["eval_chrf"]

    def register_by_chrf() -> str:
        result = peftlab("compare", "--experiment", "peftlab", "--metric", "eval_chrf",
                         "--register", NAME, cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        return next(line for line in result.stdout.splitlines() if line.startswith("Registered"))

    client.delete_run(scored[0].info.run_id)
    assert "now models:/prompts@champion" in register_by_chrf()
    assert champion_run(client) == scored[1].info.run_id
    client.restore_run(scored[0].info.run_id)  # a higher score: the alias moves
    assert f"run {scored[0].info.run_name} (eval_chrf " in register_by_chrf()
    assert champion_run(client) == scored[0].info.run_id
    client.delete_run(scored[0].info.run_id)  # a lower one: it stays
    assert "champion stays on v2 (eval_chrf " in register_by_chrf()
