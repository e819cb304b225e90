"""benchmarks/train_speed.py and sweep_speed.py as docs/benchmarks.md runs them, with --quick,
on a CSV of one's own (--csv) and a tiny model (--model) instead of the embedded one: one
invocation each prints its table, every side trained on the same rows."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.configs import ROOT

from peftlab.config import SAMPLES_DIR

# Each side or setting is a process of its own: tens of seconds on a tiny model.
pytestmark = [pytest.mark.process, pytest.mark.slow]

SIDES = ["a", "b", "b32", "b-recast", "bare"]  # train_speed's, in its table's order


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 12 sample prompts: 8 to train on, the last 4 held out (as the sweep needs)."""
    path = tmp_path_factory.mktemp("rows") / "rows.csv"
    with open(SAMPLES_DIR / "prompts.csv", newline="") as f:
        sample = list(csv.DictReader(f))[:12]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sample[0]))
        writer.writeheader()
        writer.writerows(sample)
    return path


def benchmark(script: str, model: Path, rows: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--csv", str(rows),
        "--model", str(model), "--train-rows", "0:8", "--eval-rows", "8:12", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def data_line(printed: str) -> str:
    """The line under the machine's that says what the sides trained on, and how long."""
    (line,) = [line for line in printed.splitlines() if line.startswith("data: ")]
    return line


def table(printed: str) -> dict[str, list[str]]:
    """The Markdown table's rows by their first cell, without the header."""
    lines = [line for line in printed.splitlines() if line.startswith("| ")][1:]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return {row[0]: row[1:] for row in cells}


def test_train_speed_quick_trains_each_side_once_for_one_epoch(tiny_bloom, rows, tmp_path):
    result = benchmark("train_speed.py", tiny_bloom, rows, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert data_line(result.stdout) == (
        "data: rows.csv rows 0:8 (train), 8:12 (held out); 1 epochs; medians of 1 run(s) per side"
    )
    measured = table(result.stdout)
    assert [name.split(":")[0] for name in measured] == SIDES
    for side in SIDES:  # each side measured once, in its own process
        assert result.stderr.count(f"  {side}: {{'side': '{side}'") == 1
    # The same model, rows and recipe: the sides differ in speed, not in what they learn.
    losses = [float(row[-1]) for row in measured.values()]
    assert losses == pytest.approx([losses[0]] * len(SIDES), rel=0.01)
    assert any((tmp_path / "b").iterdir())  # the Trainer's folders under --out


def test_sweep_speed_quick_runs_a_notebook_process_per_setting_and_one_sweep(tiny_bloom, rows):
    result = benchmark("sweep_speed.py", tiny_bloom, rows, "--tokens", "2,4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert data_line(result.stdout) == (
        "data: rows.csv rows 0:8 (train), 8:12 (held out); 1 epochs; virtual tokens 2,4"
    )
    assert "a: 2 notebook processes" in result.stdout
    assert "b: one peftlab sweep of 2 jobs" in result.stdout
    measured = table(result.stdout)
    assert list(measured) == ["2", "4"]
    # Both sides train the model given on the same rows: one held-out loss per setting.
    for _, notebook_loss, sweep_loss in measured.values():
        assert float(sweep_loss) == pytest.approx(float(notebook_loss), rel=0.01)
