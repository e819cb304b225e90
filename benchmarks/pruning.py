"""The same search across PEFT methods without a pruner and with each multi-fidelity one
(successive halving, Hyperband), same sampler and seed, on the reference CSV: best held-out
loss, training steps and tokens the trials spent (the parent run's ``search_steps`` and
``search_tokens``), wall time, and each against no pruner, measured in one invocation.

    .venv/bin/python benchmarks/pruning.py                          # 32 trials each
    .venv/bin/python benchmarks/pruning.py --trials 8 --pruners none,asha

Each search is ``train.py -m hparams_search=optuna-methods`` in its own folder and store, its
trials reporting a held-out loss every ``--eval-steps`` optimizer steps on one eval batch (the
preset's subset), as a search does by default.
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

from peftlab import names
from peftlab import study as studies

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "awesome-chatgpt-prompts.csv"
# The five methods of the first measurement (BENCHMARKS, "Pruning"): comparable with it, and
# none with a set-up that outlasts its training (an SVD of every layer, say) on a CPU.
METHODS = "prompt-tuning,prefix-tuning,p-tuning,lora,ia3"


def search(work: Path, pruner: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=optuna-methods",
        f"peft={args.methods}", f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.pruner={pruner}", f"hydra.sweeper.seed={args.seed}",
        f"dataset.data_files={DATA}", f"dataset.train_rows={args.train_rows}",
        f"dataset.eval_rows={args.eval_rows}", f"dataset.max_length={args.max_length}",
        f"trainer.num_train_epochs={args.epochs}", f"trainer.eval_steps={args.eval_steps}",
        "trainer.save_strategy=no", "tracking.system_metrics=false",
        "generation.prompts=[]", "generation.general_data_files=null",
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
    states = [t.state for t in study.trials]
    return {
        "best": study.best_value,
        "best_params": study.best_params,
        **spent(f"sqlite:///{work}/mlruns/mlflow.db"),
        "wall": wall,
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "completed": states.count(optuna.trial.TrialState.COMPLETE),
    }


def spent(store: str) -> dict[str, int]:
    """What the search's trials spent, as its parent run sums it."""
    client = MlflowClient(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (parent,) = [r for r in client.search_runs(experiments) if names.SWEEP_TAG in r.data.tags]
    metrics = parent.data.metrics
    return {"steps": int(metrics[names.SEARCH_STEPS]), "tokens": int(metrics[names.SEARCH_TOKENS])}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def report(results: dict[str, dict]) -> None:
    print("\n| search | best held-out loss | trials completed / pruned | training steps | "
          "tokens | wall s |\n|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for pruner, r in results.items():
        print(
            f"| {pruner} | {r['best']:.4f} | {r['completed']} / {r['pruned']} | {r['steps']} | "
            f"{r['tokens']} | {r['wall']:.0f} |"
        )
    base = results.get("none")
    for pruner, r in results.items():
        if base and pruner != "none":
            print(
                f"{pruner} vs none: best {100 * (r['best'] / base['best'] - 1):+.2f}%, "
                f"steps {r['steps'] / base['steps']:.2f}x, tokens "
                f"{r['tokens'] / base['tokens']:.2f}x, wall {r['wall'] / base['wall']:.2f}x"
            )
    for pruner, r in results.items():
        print(f"best params ({pruner}): {r['best_params']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pruners", default="none,asha,hyperband")
    parser.add_argument("--methods", default=METHODS, help="the peft= options searched across")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42, help="the TPE sampler's, every search")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--eval-steps", type=int, default=2, help="steps between reports")
    parser.add_argument("--train-rows", type=int, default=32)
    parser.add_argument("--eval-rows", type=int, default=24)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"error: the reference CSV is not at {DATA}")
    results = {}
    for pruner in args.pruners.split(","):
        with tempfile.TemporaryDirectory(prefix=f"peftlab-bench-{pruner}-") as work:
            results[pruner] = search(Path(work), pruner, args)
            print(f"{pruner}: {results[pruner]}", file=sys.stderr, flush=True)
    print(f"CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} threads; "
          f"optuna {optuna.__version__}; Python {platform.python_version()}")  # fmt: skip
    print(f"search: {vars(args)}")
    report(results)


if __name__ == "__main__":
    main()
