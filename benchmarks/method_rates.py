"""The learning-rate study behind every method's default, and the evidence of what each method
costs: each PEFT method at 3 rates (its current default / 3, x 1, x 3) on a real data set as a
task, the held-out loss, ROUGE-L, forgetting, peak memory, train time, adapter bytes and
trainable parameters of each. The data sets (``--dataset``): the reference CSV as a task
(role -> prompt, the loss on the prompt) and self-instruct's 175 human-written tasks as a
completion (instruction and input -> output). One ``train.py -m peft=<method>
trainer.learning_rate=a,b,c`` per method (a sweep: one base model, one untuned baseline), all
into one store; results are appended to a CSV as each method ends, so an interrupted study
goes on where it stopped, and a rate already in the CSV is not run again.

    .venv/bin/python benchmarks/method_rates.py --out rates.csv              # every method
    .venv/bin/python benchmarks/method_rates.py --out rates.csv --methods lora,loha
    .venv/bin/python benchmarks/method_rates.py --out rates.csv --extend   # past a best at an end
    .venv/bin/python benchmarks/method_rates.py --out si.csv --dataset self-instruct --factors 1
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
from peftlab.metrics.rouge_l import RougeL

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# Each data set's file and the overrides that read it as a task (the shipped prompts-task
# preset's completion format, its file, template and answer column replaced).
DATASETS = {
    "reference-task": (SHARED / "awesome-chatgpt-prompts.csv", []),
    "self-instruct": (
        SHARED / "self-instruct-seed-tasks.jsonl",
        ["dataset.prompt_template='Instruction: {instruction}\nInput: {input}\nOutput:\n'",
         "dataset.completion_column=output"],
    ),
}  # fmt: skip
FACTORS = "0.3333333,1,3"
ROUGE = names.SCORE_PREFIX + RougeL.name
METRICS = [
    names.EVAL_LOSS, names.EVAL_LOSS_UNTUNED, ROUGE, ROUGE + names.UNTUNED_SUFFIX,
    names.EVAL_FORGETTING, names.PEAK_MEMORY_BYTES, names.TRAIN_RUNTIME, names.ADAPTER_BYTES,
    names.TRAINABLE_PARAMS,
]  # fmt: skip
COLUMNS = ["method", "learning_rate", *METRICS, "status"]


def rounded(rate: float) -> float:
    """A rate to two significant digits, as the CSV and the runs' names show it."""
    return float(f"{rate:.2g}")


def study_rates(options: list[str], rates: list[float] | None, work: Path, args) -> list[dict]:
    """One sweep of ``options`` over ``rates`` (None: each method's own): a row of metrics for
    each job."""
    name = options[0] if len(options) == 1 else "defaults"
    experiment = f"rates-{args.dataset}-{name}"
    data_file, data_overrides = DATASETS[args.dataset]
    rate_override = [f"trainer.learning_rate={','.join(map(str, rates))}"] if rates else []
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", f"peft={','.join(options)}", *rate_override,
        "dataset=prompts-task", f"dataset.data_files={data_file}", f"dataset.name={args.dataset}",
        *data_overrides,
        f"dataset.train_rows={args.train_rows}", f"dataset.eval_rows={args.eval_rows}",
        f"dataset.max_length={args.max_length}", f"trainer.num_train_epochs={args.epochs}",
        f"trainer.per_device_train_batch_size={args.batch_size}", "trainer.save_strategy=no",
        "generation.max_new_tokens=8", f"generation.eval_max_new_tokens={args.new_tokens}",
        "tracking.system_metrics=false",
        f"tracking.experiment={experiment}", f"tracking.uri=sqlite:///{work}/mlflow.db",
        f"tracking.artifact_location={work}/artifacts",
        f"hydra.sweep.dir={work}/{args.dataset}-{'-'.join([*options, *map(str, rates or [])])}",
    ]  # fmt: skip
    subprocess.run(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    rows = [
        {
            "method": run.data.params["peft.method"].replace("_", "-"),
            "learning_rate": float(run.data.params["trainer.learning_rate"]),
            **{metric: run.data.metrics.get(metric) for metric in METRICS},
            "status": run.info.status,
        }
        for run in runs
        if names.SWEEP_TAG not in run.data.tags
    ]
    fresh = [row for row in rows if row["method"] in options]  # this sweep's methods
    return [row for row in fresh if rates is None or row["learning_rate"] in rates]


def next_rate(rows: list[dict]) -> float | None:
    """The rate one step (x3) past the best, where the best is the highest or lowest tried."""
    tried = sorted(row["learning_rate"] for row in rows)
    scored = [row for row in rows if row["eval_loss"]]
    if not scored:
        return None
    best = min(scored, key=lambda row: float(row["eval_loss"]))["learning_rate"]
    if best == tried[-1]:
        return rounded(best * 3)
    if best == tried[0]:
        return rounded(best / 3)
    return None


def rates_to_run(
    default: float, rows: list[dict], factors: list[float], extend: bool
) -> list[float]:
    """The rates a method still needs: one x3 past its best with ``extend``, else its default
    times each factor, less those already in the CSV."""
    if extend:
        rate = next_rate(rows) if rows else None
        return [rate] if rate else []
    tried = {row["learning_rate"] for row in rows}
    return [rate for f in factors if (rate := rounded(default * f)) not in tried]


def append(out: Path, rows: list[dict]) -> None:
    new = not out.exists()
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(sorted(rows, key=lambda row: row["learning_rate"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the CSV, appended to")
    parser.add_argument("--methods", help="comma-separated options; default: every method")
    parser.add_argument("--extend", action="store_true", help="x3 past a best at an end")
    parser.add_argument("--dataset", choices=DATASETS, default="reference-task")
    parser.add_argument("--factors", default=FACTORS, help="each method's default rate times")
    parser.add_argument(
        "--one-sweep", action="store_true", help="each method at its own rate, all in one sweep"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/peftlab-rates"))
    parser.add_argument("--train-rows", type=int, default=24)
    parser.add_argument("--eval-rows", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=48, help="per held-out generation")
    args = parser.parse_args()
    data_file = DATASETS[args.dataset][0]
    if not data_file.is_file():
        raise SystemExit(f"error: --dataset={args.dataset}: no file at {data_file}")
    factors = [float(factor) for factor in args.factors.split(",")]
    methods = {method.option(): method for method in REGISTRY.values()}
    wanted = args.methods.split(",") if args.methods else sorted(methods)
    studied: dict[str, list[dict]] = {}
    if args.out.exists():
        for row in csv.DictReader(args.out.open()):
            row["learning_rate"] = float(row["learning_rate"])
            studied.setdefault(row["method"], []).append(row)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.one_sweep:  # one base model and one untuned baseline for every method
        append(
            args.out, study_rates([o for o in wanted if o not in studied], None, args.work, args)
        )
        return
    for option in wanted:
        rates = rates_to_run(
            methods[option].learning_rate, studied.get(option, []), factors, args.extend
        )
        if not rates:
            continue
        rows = study_rates([option], rates, args.work, args)
        append(args.out, rows)
        print(option, [(r["learning_rate"], r["eval_loss"]) for r in rows], flush=True)


if __name__ == "__main__":
    main()
