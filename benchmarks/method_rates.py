"""The learning-rate study behind every method's default: each PEFT method at 3 rates (its
current default / 3, x 1, x 3) on the reference CSV as text, held-out loss of each, the best
marked. One ``train.py -m peft=<method> trainer.learning_rate=a,b,c`` per method (a sweep: one
base model, one untuned baseline), all into one store; results are appended to a CSV as each
method ends, so an interrupted study goes on where it stopped.

    .venv/bin/python benchmarks/method_rates.py --out rates.csv              # every method
    .venv/bin/python benchmarks/method_rates.py --out rates.csv --methods lora,loha
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from peftlab import names
from peftlab.methods import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "awesome-chatgpt-prompts.csv"
FACTORS = (1 / 3, 1, 3)
COLUMNS = ["method", "learning_rate", "eval_loss", "eval_loss_untuned", "status"]


def study_method(option: str, rate: float, work: Path, args: argparse.Namespace) -> list[dict]:
    rates = [float(f"{rate * factor:.2g}") for factor in FACTORS]
    experiment = f"rates-{option}"
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", f"peft={option}",
        f"trainer.learning_rate={','.join(map(str, rates))}",
        f"dataset.data_files={DATA}", "dataset.name=awesome-chatgpt-prompts-csv",
        f"dataset.train_rows={args.train_rows}", f"dataset.eval_rows={args.eval_rows}",
        f"dataset.max_length={args.max_length}", f"trainer.num_train_epochs={args.epochs}",
        "trainer.save_strategy=no", "generation.max_new_tokens=8",
        "generation.general_data_files=null", "tracking.system_metrics=false",
        f"tracking.experiment={experiment}", f"tracking.uri=sqlite:///{work}/mlflow.db",
        f"tracking.artifact_location={work}/artifacts", f"hydra.sweep.dir={work}/{option}",
    ]  # fmt: skip
    subprocess.run(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return [
        {
            "method": option,
            "learning_rate": float(run.data.params["trainer.learning_rate"]),
            "eval_loss": run.data.metrics.get(names.EVAL_LOSS),
            "eval_loss_untuned": run.data.metrics.get(names.EVAL_LOSS_UNTUNED),
            "status": run.info.status,
        }
        for run in runs
        if names.SWEEP_TAG not in run.data.tags
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the CSV, appended to")
    parser.add_argument("--methods", help="comma-separated options; default: every method")
    parser.add_argument("--work", type=Path, default=Path("/tmp/peftlab-rates"))
    parser.add_argument("--train-rows", type=int, default=24)
    parser.add_argument("--eval-rows", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"error: the reference CSV is not at {DATA}")
    methods = {method.option(): method for method in REGISTRY.values()}
    wanted = args.methods.split(",") if args.methods else sorted(methods)
    done = set()
    if args.out.exists():
        done = {row["method"] for row in csv.DictReader(args.out.open())}
    args.work.mkdir(parents=True, exist_ok=True)
    for option in [option for option in wanted if option not in done]:
        rows = study_method(option, methods[option].learning_rate, args.work, args)
        new = not args.out.exists()
        with args.out.open("a", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            if new:
                writer.writeheader()
            writer.writerows(sorted(rows, key=lambda row: row["learning_rate"]))
        print(option, [(r["learning_rate"], r["eval_loss"]) for r in rows], flush=True)


if __name__ == "__main__":
    main()
