"""One job on two processes, data-parallel through torch.distributed (gloo on this CPU):
launched by torchrun, it trains as one process would on the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.configs import ROOT, tiny_overrides
from helpers.runners import run_tiny
from helpers.stores import store_runs

from peftlab import names

pytestmark = pytest.mark.process  # torchrun's processes


def test_torchrun_trains_one_run_equal_to_a_single_process(tiny_bloom: Path, tmp_path: Path):
    torchrun = Path(sys.executable).with_name("torchrun")
    launched = subprocess.run(
        [str(torchrun), "--nproc-per-node=2", str(ROOT / "train.py"),
         *tiny_overrides(tiny_bloom, tmp_path), "trainer.per_device_train_batch_size=2",
         f"hydra.run.dir={tmp_path}/outputs/ddp"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    client, runs = store_runs(tmp_path)
    (run,) = runs  # logged by the first process alone
    assert run.info.status == "FINISHED"
    assert launched.stdout.count("MLflow run ") == 1

    alone = run_tiny(tiny_bloom, tmp_path / "alone", "trainer.per_device_train_batch_size=4")
    assert run.data.metrics[names.EVAL_LOSS] == pytest.approx(alone.eval_loss, abs=1e-4)
    assert run.data.metrics[names.EVAL_LOSS] != pytest.approx(
        run.data.metrics[names.EVAL_LOSS_UNTUNED]
    )
    steps = client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)
    assert len(steps) == run.data.metrics[names.TRAIN_STEPS] == 8  # 16 rows, 2 epochs, 2 x 2 a step
    assert (tmp_path / "outputs" / "ddp" / "adapter" / "adapter_model.safetensors").is_file()
