from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from peftlab import tracking
from peftlab.config import TrackingConfig


def store(tmp_path: Path, experiment: str = "exp") -> TrackingConfig:
    return TrackingConfig(
        uri=f"sqlite:///{tmp_path}/nested/mlflow.db",
        experiment=experiment,
        artifact_location=str(tmp_path / "artifacts"),
    )


def test_store_and_experiment_are_created_once(tmp_path: Path):
    cfg = store(tmp_path)
    first, second = tracking.use_store(cfg), tracking.use_store(cfg)
    assert first == second
    assert (tmp_path / "nested" / "mlflow.db").is_file()
    location = MlflowClient(cfg.uri).get_experiment(first).artifact_location
    assert location == (tmp_path / "artifacts").resolve().as_uri()


def test_run_ends_finished(tmp_path: Path):
    cfg = store(tmp_path)
    tracking.use_store(cfg)
    with tracking.run("ok", {"model": "tiny"}) as active:
        mlflow.log_metric("eval_loss", 1.0)
    run = MlflowClient(cfg.uri).get_run(active.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["model"] == "tiny"


def test_run_ends_failed_with_the_error_on_exception(tmp_path: Path):
    cfg = store(tmp_path)
    tracking.use_store(cfg)
    with pytest.raises(RuntimeError), tracking.run("boom", {}) as active:
        raise RuntimeError("out of memory")
    run = MlflowClient(cfg.uri).get_run(active.info.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: out of memory"


def test_flatten_gives_dotted_keys():
    nested = {"peft": {"num_virtual_tokens": 4}, "generation": {"prompts": ["a", "b"]}, "x": None}
    assert tracking.flatten(nested) == {
        "peft.num_virtual_tokens": "4",
        "generation.prompts": "['a', 'b']",
        "x": "None",
    }


def test_ui_hint_points_at_the_run(tmp_path: Path):
    cfg = store(tmp_path)
    tracking.use_store(cfg)
    with tracking.run("hint", {}) as active:
        pass
    assert active.info.run_id in tracking.ui_hint(cfg, active)
    assert "make ui" in tracking.ui_hint(cfg, active)
