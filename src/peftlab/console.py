"""What the console shows: peftlab's progress and summary, not the libraries' chatter."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING

import datasets
from transformers.utils import logging as hf_logging

if TYPE_CHECKING:  # the pipeline imports torch and peft: seconds every `peftlab` command
    from peftlab.pipeline import RunResult


def quiet_libraries() -> None:
    """Keep the console to peftlab's own progress: libraries speak only on errors."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    for name in ("alembic", "mlflow", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def report(result: RunResult) -> None:
    untuned, tuned = result.eval_loss_untuned, result.eval_loss
    lines = [f"Held-out eval loss: untuned {untuned:.4f} -> tuned {tuned:.4f}"]
    if result.scores:
        scores = ", ".join(f"{name} {a:.2f} -> {b:.2f}" for name, (a, b) in result.scores.items())
        lines.append(f"Held-out generations (untuned -> tuned): {scores}")
    for sample in result.samples:
        lines += [
            f"Prompt:  {sample.prompt}",
            f"  untuned: {sample.untuned}",
            f"  tuned:   {sample.tuned}",
        ]
    lines += [
        f"Adapter: {result.adapter_dir}",
        f"MLflow run {result.run_id}: {result.ui_hint}",
    ]
    print("\n".join(lines), file=sys.stdout, flush=True)


def side_by_side(prompt: str, outputs: list[tuple[str, str]]) -> str:
    """A prompt and each model's continuation, one titled block each."""
    width = max(len(title) for title, _ in outputs) + 4
    blocks = [f"Prompt: {prompt}"]
    for title, text in outputs:
        blocks += ["", f"== {title} ".ljust(width, "="), text or "(empty)"]
    return "\n".join(blocks)


def close_progress_bars() -> None:
    """Finish the progress bars an interrupted loop left open, so that they are drawn before the
    last line rather than over it at exit."""
    from tqdm import tqdm

    for bar in list(tqdm._instances):  # tqdm's registry of open bars
        bar.close()
