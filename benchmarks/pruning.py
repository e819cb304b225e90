"""A search across every PEFT method with the median pruner against the same search without
pruning (same sampler and seed), on the reference CSV: best held-out loss, training steps spent
in total, wall time, and the ratios, measured in one invocation.

    .venv/bin/python benchmarks/pruning.py                 # 16 trials each
    .venv/bin/python benchmarks/pruning.py --trials 8 --epochs 2

Each search is ``train.py -m hparams_search=optuna-methods`` in its own folder and store.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from peftlab import study as studies

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "awesome-chatgpt-prompts.csv"


def search(work: Path, pruner: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=optuna-methods",
        f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.pruner={pruner}",
        "+hydra.sweeper.pruner_settings={}" if pruner == "none" else
        f"+hydra.sweeper.pruner_settings={{n_startup_trials:{args.startup},n_warmup_steps:0}}",
        f"dataset.data_files={DATA}", f"dataset.train_rows={args.train_rows}",
        f"dataset.eval_rows={args.eval_rows}", f"dataset.max_length={args.max_length}",
        f"trainer.num_train_epochs={args.epochs}", "trainer.eval_strategy=epoch",
        "trainer.save_strategy=no", "tracking.system_metrics=false",
        f"tracking.uri=sqlite:///{work}/mlruns/mlflow.db",
        f"tracking.artifact_location={work}/mlruns/artifacts",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, cwd=work, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    (journal,) = work.glob(f"multirun/*/*/{studies.JOURNAL_FILE}")
    study = optuna.load_study(
        study_name="peftlab-methods", storage=studies.open_storage(f"journal:{journal}")
    )
    client = MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    steps = sum(r.data.metrics.get("train_steps", 0) for r in runs)
    states = [t.state for t in study.trials]
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(completed, key=lambda t: t.value)
    return {
        "best": best.value,
        "best_params": best.params,
        "steps": int(steps),
        "wall": wall,
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "completed": states.count(optuna.trial.TrialState.COMPLETE),
    }


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--startup", type=int, default=4, help="median pruner's n_startup_trials")
    parser.add_argument("--train-rows", type=int, default=32)
    parser.add_argument("--eval-rows", type=int, default=24)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"error: the reference CSV is not at {DATA}")
    results = {}
    for pruner in ("none", "median"):
        with tempfile.TemporaryDirectory(prefix=f"peftlab-bench-{pruner}-") as work:
            results[pruner] = search(Path(work), pruner, args)
    print(f"CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} threads; "
          f"optuna {optuna.__version__}; Python {platform.python_version()}")  # fmt: skip
    print(f"search: {vars(args)}")
    print("\n| search | best held-out loss | trials completed / pruned | training steps | wall s |")
    print("|---|---:|---:|---:|---:|")
    for pruner, r in results.items():
        print(
            f"| {pruner} pruner | {r['best']:.4f} | {r['completed']} / {r['pruned']} | "
            f"{r['steps']} | {r['wall']:.0f} |"
        )
    base, pruned = results["none"], results["median"]
    print(
        f"\nmedian vs none: best {100 * (pruned['best'] / base['best'] - 1):+.2f}%, "
        f"steps {pruned['steps'] / base['steps']:.2f}x, wall {pruned['wall'] / base['wall']:.2f}x"
    )
    for pruner, r in results.items():
        print(f"best params ({pruner}): {r['best_params']}")


if __name__ == "__main__":
    main()
