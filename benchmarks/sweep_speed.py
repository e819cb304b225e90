"""Sweep speed: one peftlab sweep against the notebook recipe run once per setting.

(a) runs ``notebook_recipe.py`` in a new process for each virtual-token count, as a user without
a sweep would; (b) runs ``train.py -m peft.num_virtual_tokens=...`` once, where the jobs share
the loaded model, the tokenized data and the untuned baseline. Both train the embedded
SmolLM2-135M on the same CSV rows (RANDOM init, lr 3e-3, same epochs), generate from the
notebook's two prompts before and after tuning, save each adapter and score the held-out rows;
(b) also logs everything to MLflow. Wall times are of the whole processes, imports included.

    .venv/bin/python benchmarks/sweep_speed.py             # 6 epochs, tokens 4,8,20
    .venv/bin/python benchmarks/sweep_speed.py --quick     # 1 epoch
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import notebook_recipe

ROOT = notebook_recipe.ROOT


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    notebook_recipe.add_data_arguments(parser)
    parser.add_argument("--tokens", default="4,8,20", help="the virtual-token counts swept")
    parser.add_argument("--quick", action="store_true", help="1 epoch")
    args = parser.parse_args()
    if args.quick:
        args.epochs = 1
    return args


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return wall, result.stdout


def notebook_runs(args: argparse.Namespace, work: Path) -> dict[int, dict]:
    runs = {}
    for tokens in map(int, args.tokens.split(",")):
        wall, stdout = timed([
            sys.executable, str(ROOT / "benchmarks" / "notebook_recipe.py"),
            *notebook_recipe.data_arguments(args),
            "--num-virtual-tokens", str(tokens), "--out", str(work / f"notebook-{tokens}"),
        ])  # fmt: skip
        runs[tokens] = {"wall_s": wall, **json.loads(stdout.strip().splitlines()[-1])}
        print(f"  notebook, {tokens} tokens: {wall:.1f} s", file=sys.stderr, flush=True)
    return runs


def sweep_run(args: argparse.Namespace, work: Path) -> tuple[float, dict[int, float]]:
    """Wall time of the whole sweep and each job's held-out loss, read back from MLflow."""
    from mlflow.tracking import MlflowClient

    train_rows = notebook_recipe.rows(args.train_rows)
    eval_rows = notebook_recipe.rows(args.eval_rows)
    if train_rows.start != 0 or eval_rows.stop != csv_rows(args.csv):
        sys.exit("the sweep trains on the first rows and holds out the last: give --train-rows "
                 "0:N and --eval-rows M:<rows in the CSV>")  # fmt: skip
    uri = f"sqlite:///{work}/mlruns/mlflow.db"
    # The notebook side's --model, else the embedded model both sides default to.
    model = [f"model.name_or_path={args.model}", "model.gguf_file=null"] if args.model else []
    wall, _ = timed([
        sys.executable, "train.py", "-m", f"peft.num_virtual_tokens={args.tokens}",
        "peft.prompt_tuning_init=RANDOM", f"trainer.num_train_epochs={args.epochs:g}",
        "dataset.name=bench", "dataset.path=null", f"dataset.data_files={args.csv}",
        f"dataset.text_column={args.column}", f"dataset.train_rows={len(train_rows)}",
        f"dataset.eval_rows={len(eval_rows)}", "generation.max_new_tokens=48",
        f"tracking.uri={uri}", f"tracking.artifact_location={work}/mlruns/artifacts",
        f"hydra.sweep.dir={work}/multirun", *model,
    ])  # fmt: skip
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    jobs = client.search_runs(experiments, "metrics.eval_loss > 0")
    return wall, {int(r.data.params["peft.num_virtual_tokens"]): r.data.metrics["eval_loss"]
                  for r in jobs}  # fmt: skip


def csv_rows(path: Path) -> int:
    from datasets import load_dataset

    return len(load_dataset("csv", data_files=str(path), split="train"))


def report(args: argparse.Namespace, notebook: dict[int, dict], sweep_wall: float, sweep_loss):
    notebook_wall = sum(run["wall_s"] for run in notebook.values())
    lines = [
        *notebook_recipe.header(args, f"virtual tokens {args.tokens}"),
        "",
        "| virtual tokens | a: notebook process, wall s | a: held-out loss | b: held-out loss |",
        "|---:|---:|---:|---:|",
    ]
    for tokens, run in notebook.items():
        wall, loss = run["wall_s"], run["eval_loss"]
        lines.append(f"| {tokens} | {wall:.1f} | {loss:.4f} | {sweep_loss[tokens]:.4f} |")
    lines += [
        "",
        f"a: {len(notebook)} notebook processes, {notebook_wall:.1f} s in all",
        f"b: one peftlab sweep of {len(notebook)} jobs, {sweep_wall:.1f} s",
        f"a/b wall time: {notebook_wall / sweep_wall:.2f}x (bar: >= 2.2x)",
    ]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    notebook_recipe.require_csv(args.csv)
    with tempfile.TemporaryDirectory(prefix="sweep-speed-") as tmp:
        work = Path(tmp)
        notebook = notebook_runs(args, work)
        sweep_wall, sweep_loss = sweep_run(args, work)
        print(f"  sweep: {sweep_wall:.1f} s", file=sys.stderr, flush=True)
    print(report(args, notebook, sweep_wall, sweep_loss))


if __name__ == "__main__":
    main()
