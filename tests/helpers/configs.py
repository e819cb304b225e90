"""The real config tree (``conf/``), composed as train.py composes it, with small overrides."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"


def tiny_overrides(model_dir: Path, work: Path) -> list[str]:
    """Overrides for a seconds-long run of a tiny model with its store under ``work``."""
    return [
        f"model.name_or_path={model_dir}",
        "model.gguf_file=null",
        "dataset.train_rows=16",
        "dataset.eval_rows=8",
        "dataset.max_length=32",
        "trainer.num_train_epochs=2",
        "trainer.per_device_train_batch_size=4",
        "generation.max_new_tokens=8",
        "generation.eval_max_new_tokens=8",
        # Exact in fp32 only: on a GPU, precision=auto would train in bf16 autocast, whose
        # losses move in the 4th digit between two evaluations of the same adapter.
        "trainer.precision=fp32",
        f"tracking.uri=sqlite:///{work}/mlruns/mlflow.db",
        f"tracking.artifact_location={work}/mlruns/artifacts",
    ]


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def compose_run(overrides: list[str], run_dir: Path) -> tuple[DictConfig, DictConfig]:
    """The config of a run into ``run_dir`` and Hydra's own config of it (its ``hydra`` node:
    the groups' choices, the output folder), as a launch by train.py would have them."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    hydra_cfg = cfg.hydra
    with open_dict(cfg):
        del cfg["hydra"]
    with open_dict(hydra_cfg):
        hydra_cfg.runtime.output_dir = str(run_dir)
        hydra_cfg.mode = RunMode.RUN
    return cfg, hydra_cfg


def in_process_overrides(work: Path, name: str = "run") -> list[str]:
    """Replace the ``${hydra:...}`` values that only a Hydra launch can resolve."""
    return [f"output_dir={work}/{name}"]
