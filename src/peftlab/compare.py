"""Compare the runs of a sweep (or an experiment): a ranked table and plots, logged to the sweep."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure  # pyplot-free: no display backend, no global state
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from peftlab import metrics, names
from peftlab.errors import PeftlabError
from peftlab.tracking import latest_parent

METRICS = [
    names.EVAL_LOSS,
    names.EVAL_LOSS_UNTUNED,
    "improvement",
    "improvement_pct",
    names.TRAINABLE_PARAMS,
    names.ADAPTER_BYTES,
    names.TRAIN_RUNTIME,
    names.TRAIN_TOKENS_PER_SECOND,
    names.SEARCH_STEPS,  # a search's trials: what each spent, a pruned one up to its stop
    names.SEARCH_TOKENS,
]
DERIVED = ("improvement", "improvement_pct")  # computed here from the logged metrics
COUNTS = (
    names.TRAINABLE_PARAMS,
    names.ADAPTER_BYTES,
    names.SEARCH_STEPS,
    names.SEARCH_TOKENS,
)  # MLflow stores every metric as a float
# Scores of held-out generations, where runs logged them (tasks: completion and chat data).
GENERATION_METRICS = [
    f"{names.SCORE_PREFIX}{name}{suffix}"
    for name in metrics.REGISTRY
    for suffix in ("", names.UNTUNED_SUFFIX)
]
METHOD = "peft.method"
# Keys that differ between any two runs without being a choice worth comparing.
NOT_COMPARED = ("output_dir", "tracking.")


@dataclass
class Comparison:
    # One row per finished run, best by ``metric`` first, runs stopped by a pruner last.
    table: pd.DataFrame
    swept: list[str]
    runs: list[Run]
    parent: Run | None
    metric: str = names.EVAL_LOSS


def collect(
    client: MlflowClient,
    sweep: str | None = None,
    experiment: str | None = None,
    metric: str = names.EVAL_LOSS,
) -> Comparison:
    """Finished runs of a sweep (by parent run id), of an experiment, or of the latest sweep,
    ranked by ``metric`` (higher first where higher is better: ``eval_rougeL``)."""
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise PeftlabError(f"--experiment={experiment!r}: no such MLflow experiment")
        runs = client.search_runs([found.experiment_id])
        runs = [r for r in runs if names.SWEEP_TAG not in r.data.tags]
        return _comparison(runs, parent=None, metric=metric)
    parent = _parent(client, sweep)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`{names.PARENT_TAG}` = '{parent.info.run_id}'"
    )
    return _comparison(children, parent, metric)


def _parent(client: MlflowClient, sweep: str | None) -> Run:
    if sweep is not None:
        try:
            return client.get_run(sweep)
        except Exception as error:
            raise PeftlabError(f"--sweep={sweep!r}: no such MLflow run") from error
    latest = latest_parent(client, names.SWEEP_TAG)
    if latest is None:
        raise PeftlabError(
            "no sweep found in this store: run one with `python train.py -m ...`, "
            "or pass --experiment NAME"
        )
    return latest


def _comparison(runs: list[Run], parent: Run | None, metric: str = names.EVAL_LOSS) -> Comparison:
    finished = [r for r in runs if r.info.status == "FINISHED" and metric in r.data.metrics]
    if not finished:
        logged = sorted(
            {key for r in runs for key in r.data.metrics if key.startswith(names.SCORE_PREFIX)}
        )
        raise PeftlabError(
            f"--metric={metric!r}: no finished run logged it; held-out metrics logged: "
            f"{', '.join(logged) or 'none'}"
        )
    swept = _swept_keys(finished, parent)
    scores = [name for name in GENERATION_METRICS if any(name in r.data.metrics for r in finished)]
    rows = []
    for run in finished:
        logged = run.data.metrics
        row = {"run": run.info.run_name, "run_id": run.info.run_id}
        row |= {key: setting(run, key) for key in swept}
        row["method"] = run.data.params.get(METHOD)
        row["pruned"] = run.data.tags.get(names.PRUNED_TAG)  # the step a search's pruner stopped it
        row |= {key: logged.get(key) for key in [*METRICS, *scores] if key not in DERIVED}
        untuned = logged.get(names.EVAL_LOSS_UNTUNED, float("nan"))
        row["improvement"] = untuned - logged[names.EVAL_LOSS]
        row["improvement_pct"] = 100 * row["improvement"] / untuned
        rows.append(row)
    # A run the pruner stopped early never ranks above one that trained to its end.
    table = pd.DataFrame(rows)
    table = table.assign(_pruned=table["pruned"].notna())
    table = table.sort_values(
        ["_pruned", metric],
        ascending=[True, not metrics.higher_is_better(metric)],
        kind="stable",
    ).reset_index(drop=True)
    counts = table[list(COUNTS)].apply(pd.to_numeric)  # a column no run logged: all None
    table[list(COUNTS)] = counts.round().astype("Int64")
    table.index = pd.RangeIndex(1, len(table) + 1, name="rank")
    columns = ["run", *swept, "method", "pruned", *METRICS, *scores, "run_id"]
    return Comparison(table[columns], swept, finished, parent, metric)


def setting(run: Run, key: str) -> str | None:
    """A run's value of a config key (``peft.r``), or its choice of a config group (``peft``),
    which train.py records as a tag."""
    return run.data.params.get(key, run.data.tags.get(key))


def _swept_keys(runs: list[Run], parent: Run | None) -> list[str]:
    if parent is not None and parent.data.tags.get(names.SWEPT_KEYS_TAG):
        return parent.data.tags[names.SWEPT_KEYS_TAG].split(",")
    return differing_params(runs)


def differing_params(runs: list[Run]) -> list[str]:
    """The params whose values differ between ``runs``, worth comparing them by."""
    keys = sorted({key for run in runs for key in run.data.params})
    return [
        key
        for key in keys
        if not key.startswith(NOT_COMPARED) and len({run.data.params.get(key) for run in runs}) > 1
    ]


def varied(runs: list[Run], keys: list[str]) -> list[str]:
    """Of ``keys``, those the runs of one method differ in: worth a curve. A difference that
    comes only with the method (a key of one method alone, ``peft.r``; each method's learning
    rate) is told by the method."""
    methods = {run.data.params.get(METHOD) for run in runs}
    return [
        key
        for key in keys
        if key != METHOD
        and any(
            len({setting(run, key) for run in runs if run.data.params.get(METHOD) == method}) > 1
            for method in methods
        )
    ]


def write(comparison: Comparison, client: MlflowClient, out_dir: Path) -> list[Path]:
    """Markdown and CSV table, and PNG plots, in ``out_dir``; returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, csv = out_dir / "comparison.md", out_dir / "comparison.csv"
    markdown.write_text(console_table(comparison) + "\n")
    comparison.table.to_csv(csv)
    return [
        markdown,
        csv,
        _save(train_loss_figure(comparison, client), out_dir / "train_loss.png"),
        _save(eval_loss_figure(comparison), out_dir / "eval_loss_vs_params.png"),
    ]


def train_loss_figure(comparison: Comparison, client: MlflowClient) -> Figure:
    """One curve per run; the runs of one method share a colour."""
    fig = Figure(figsize=(11, 5))
    ax = fig.subplots()
    methods = sorted({str(run.data.params.get(METHOD)) for run in comparison.runs})
    for run in comparison.runs:
        history = sorted(
            client.get_metric_history(run.info.run_id, names.TRAIN_LOSS), key=lambda m: m.step
        )
        colour = f"C{methods.index(str(run.data.params.get(METHOD))) % 10}"
        label = f"{run.data.params.get(METHOD)}: {run.info.run_name}"
        ax.plot([m.step for m in history], [m.value for m in history], colour, label=label)
    ax.set(title="Training loss per step", xlabel="step", ylabel="train loss")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # off the curves
    ax.grid(alpha=0.3)
    return fig


def eval_loss_figure(comparison: Comparison) -> Figure:
    """Held-out loss against each key that varies, one line per method and setting of the
    others."""
    keys = varied(comparison.runs, comparison.swept)
    fig = Figure(figsize=(5 * max(len(keys), 1), 4.5))
    axes = fig.subplots(1, max(len(keys), 1), squeeze=False)
    table = comparison.table
    for ax, key in zip(axes[0], keys or ["run"], strict=True):
        others = [k for k in ["method", *keys] if k != key]
        groups = table.groupby(others, sort=True, dropna=False) if others else [((), table)]
        for values, group in groups:
            group = group.sort_values(key, key=_numeric_if_possible)
            pairs = zip(others, _as_tuple(values), strict=True)
            label = ", ".join(f"{k}={v}" for k, v in pairs) or "runs"
            ax.plot(group[key].astype(str), group[names.EVAL_LOSS], marker="o", label=label)
        ax.set(title=f"Held-out eval loss vs {key}", xlabel=key, ylabel="eval loss")
        ax.tick_params(axis="x", labelrotation=30)  # method names side by side
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    return fig


def _numeric_if_possible(column: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(column, errors="coerce")
    return column if numeric.isna().any() else numeric


def _as_tuple(values) -> tuple:
    return values if isinstance(values, tuple) else (values,)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def log_to_parent(client: MlflowClient, comparison: Comparison, files: list[Path]) -> None:
    if comparison.parent is None:
        return
    for file in files:
        client.log_artifact(comparison.parent.info.run_id, str(file), "comparison")


def console_table(comparison: Comparison) -> str:
    """The table as a person reads it: columns with nothing in them left out, a param blank
    where it does not apply to a run's method, counts as integers, scores to 4 decimals, params
    as they were set (the CSV holds everything)."""
    shown = comparison.table.drop(columns=["run_id"]).dropna(axis=1, how="all")
    cells = shown.apply(lambda column: column.map(_cell))
    return cells.to_markdown(disable_numparse=True)


def _cell(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
