"""Compare the runs of a sweep (or an experiment): a ranked table and plots, logged to the sweep."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure  # pyplot-free: no display backend, no global state
from matplotlib.transforms import Bbox
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from peftlab import metrics, names, pareto
from peftlab.errors import PeftlabError
from peftlab.tracking import latest_parent

METRICS = [
    names.EVAL_LOSS,
    names.EVAL_LOSS_UNTUNED,
    "improvement",
    "improvement_pct",
    names.EVAL_FORGETTING,
    names.TRAINABLE_PARAMS,
    names.ADAPTER_BYTES,
    names.PEAK_MEMORY_BYTES,
    names.TRAIN_RUNTIME,
    names.TRAIN_TOKENS_PER_SECOND,
    names.SEARCH_STEPS,  # a search's trials: what each spent, a pruned one up to its stop
    names.SEARCH_TOKENS,
]
DERIVED = ("improvement", "improvement_pct")  # computed here from the logged metrics
BYTES = (names.ADAPTER_BYTES, names.PEAK_MEMORY_BYTES)  # on the console in MB
# MLflow stores every metric as a float; these are whole numbers.
COUNTS = (names.TRAINABLE_PARAMS, *BYTES, names.SEARCH_STEPS, names.SEARCH_TOKENS)
ONE_DECIMAL = (names.TRAIN_RUNTIME, names.TRAIN_TOKENS_PER_SECOND)  # seconds; tokens a second
# Scores of held-out generations, where runs logged them (tasks: completion and chat data).
GENERATION_METRICS = metrics.logged_scores()
METHOD = "peft.method"
PARETO = "pareto"  # the column: whether a run is on the frontier of --pareto's two metrics
CSV_FILE = "comparison.csv"
# The console's table fits a terminal this wide; the CSV holds every column at full precision.
CONSOLE_WIDTH = 120
RUN_WIDTH = 24  # characters of a run's name there (longer ones are cut)
VALUE_WIDTH = 20  # of a key's value
# Where the table is too wide, runs' names give way first down to RUN_FLOOR characters, then
# the keys, least informative first, then the names again down to MIN_RUN_WIDTH.
RUN_FLOOR = 16
MIN_RUN_WIDTH = 8
MB = 1e6
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
    pareto: tuple[str, str] | None = None  # the two metrics whose frontier is marked


def collect(
    client: MlflowClient,
    sweep: str | None = None,
    experiment: str | None = None,
    metric: str = names.EVAL_LOSS,
    pareto: tuple[str, str] | None = None,
) -> Comparison:
    """Finished runs of a sweep (by parent run id), of an experiment, or of the latest sweep,
    ranked by ``metric`` (higher first where higher is better: ``eval_rougeL``), those on the
    Pareto frontier of the two metrics ``pareto`` marked."""
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise PeftlabError(f"--experiment={experiment!r}: no such MLflow experiment")
        runs = client.search_runs([found.experiment_id])
        runs = [r for r in runs if names.SWEEP_TAG not in r.data.tags]
        return _comparison(runs, None, metric, pareto)
    parent = _parent(client, sweep)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`{names.PARENT_TAG}` = '{parent.info.run_id}'"
    )
    return _comparison(children, parent, metric, pareto)


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


def _comparison(
    runs: list[Run],
    parent: Run | None,
    metric: str = names.EVAL_LOSS,
    pair: tuple[str, str] | None = None,
) -> Comparison:
    finished = [r for r in runs if r.info.status == "FINISHED" and metric in r.data.metrics]
    if not finished:
        logged = sorted(
            {key for r in runs for key in r.data.metrics if key.startswith(names.SCORE_PREFIX)}
        )
        raise PeftlabError(
            f"--metric={metric!r}: no finished run logged it; held-out metrics logged: "
            f"{', '.join(logged) or 'none'}"
        )
    if pair is not None:
        pareto.require_logged(pair, {key for run in finished for key in run.data.metrics})
    swept = _swept_keys(finished, parent)
    scores = [name for name in GENERATION_METRICS if any(name in r.data.metrics for r in finished)]
    wanted = list(dict.fromkeys([*METRICS, *scores, *(pair or ())]))
    table = _ranked(pd.DataFrame([_row(run, swept, wanted) for run in finished]), metric)
    marked = []
    if pair is not None:
        # A run the pruner stopped early is no trade-off: its costs stopped with it.
        trained = table[table["pruned"].isna()]
        table[PARETO] = pareto.frontier(trained, *pair).reindex(table.index, fill_value=False)
        marked = [PARETO]
    columns = ["run", *swept, "method", "pruned", *wanted, *marked, "run_id"]
    return Comparison(table[columns], swept, finished, parent, metric, pair)


def _row(run: Run, swept: list[str], wanted: list[str]) -> dict:
    logged = run.data.metrics
    row = {"run": run.info.run_name, "run_id": run.info.run_id}
    row |= {key: setting(run, key) for key in swept}
    row["method"] = run.data.params.get(METHOD)
    row["pruned"] = run.data.tags.get(names.PRUNED_TAG)  # the step a search's pruner stopped it
    row |= {key: logged.get(key) for key in wanted if key not in DERIVED}
    untuned = logged.get(names.EVAL_LOSS_UNTUNED, float("nan"))
    row["improvement"] = untuned - logged.get(names.EVAL_LOSS, float("nan"))
    row["improvement_pct"] = 100 * row["improvement"] / untuned
    return row


def _ranked(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Best by ``metric`` first; a run the pruner stopped early never ranks above one that
    trained to its end. Counts as integers, the rank as the index."""
    table = table.assign(_pruned=table["pruned"].notna())
    table = table.sort_values(
        ["_pruned", metric],
        ascending=[True, not metrics.higher_is_better(metric)],
        kind="stable",
    ).reset_index(drop=True)
    counts = table[list(COUNTS)].apply(pd.to_numeric)  # a column no run logged: all None
    table[list(COUNTS)] = counts.round().astype("Int64")
    table.index = pd.RangeIndex(1, len(table) + 1, name="rank")
    return table


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
    markdown, csv = out_dir / "comparison.md", out_dir / CSV_FILE
    markdown.write_text(console_table(comparison) + "\n")
    comparison.table.to_csv(csv)
    files = [
        markdown,
        csv,
        _save(train_loss_figure(comparison, client), out_dir / "train_loss.png"),
        _save(eval_loss_figure(comparison), out_dir / "eval_loss_vs_params.png"),
    ]
    if comparison.pareto is not None:
        x, y = comparison.pareto
        files.append(_save(pareto_figure(comparison), out_dir / f"pareto_{x}_vs_{y}.png"))
    return files


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


def pareto_figure(comparison: Comparison) -> Figure:
    """Every run that logged both of ``--pareto``'s metrics, labelled by its short name (runs
    that tie by one label), and the frontier as a step line: what each metric costs of the
    other."""
    assert comparison.pareto is not None
    x, y = comparison.pareto
    table = comparison.table
    points = pd.DataFrame({name: _plotted(table[name], name) for name in (x, y)})
    points = points.assign(label=short_runs(comparison)).dropna(subset=[x, y])
    on, pruned = table.loc[points.index, PARETO], table.loc[points.index, "pruned"].notna()
    fig = Figure(figsize=(8, 6))
    ax = fig.subplots()
    off = {"beaten by another run": (~on & ~pruned, "o"), "pruned: no trade-off": (pruned, "x")}
    for colour, (label, (rows, marker)) in zip(("C0", "C7"), off.items(), strict=True):
        if rows.any():  # a legend entry only for what is drawn
            ax.scatter(points[x][rows], points[y][rows], color=colour, marker=marker, label=label)
    line = pareto.staircase(points[on], x, y)
    ax.step(line[x], line[y], where="post", color="C3", marker="o", label="Pareto frontier")
    ax.set(title=f"{y} vs {x}: the Pareto frontier", xlabel=_axis(x), ylabel=_axis(y))
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    _label_points(ax, points.assign(on=on), x, y)
    return fig


# Where a label may sit beside its point, in points: above right, below right, above left,
# below left, right, left.
LABEL_SIDES = ((4, 4), (4, -4), (-4, 4), (-4, -4), (7, 0), (-7, 0))
# Around another run's point, a label keeps this far (a default marker's radius is 3 pt): far
# enough to read as its own point's; a frontier point's may come as near as the tight one.
MARKER_RADIUS_PT = 8
TIGHT_MARKER_RADIUS_PT = 4


def _label_points(ax, points: pd.DataFrame, x: str, y: str) -> None:
    """Each point's runs (ties in one label) beside it, the frontier's first. A label that would
    cover a label already placed or another point (where it would read as that point's) tries
    its point's other sides, else is left off: with dozens of runs (every method), crowded
    labels are unreadable, and the table names every run. A frontier point's label may come
    nearer another point before it is left off."""
    FigureCanvasAgg(ax.figure)  # a renderer, to measure each label where it is drawn
    renderer = ax.figure.canvas.get_renderer()
    ax.autoscale_view()
    wide, tight = (
        _marker_boxes(ax, points, x, y, r) for r in (MARKER_RADIUS_PT, TIGHT_MARKER_RADIUS_PT)
    )
    placed = []
    groups = points.groupby([x, y], sort=False)
    for at, tied in sorted(groups, key=lambda group: not group[1]["on"].any()):
        margins = (wide, tight) if tied["on"].any() else (wide,)
        tries = [placed + [box for point, box in m.items() if point != at] for m in margins]
        for obstacles, (dx, dy) in product(tries, LABEL_SIDES):
            text = ax.annotate(
                "\n".join(tied["label"]), at, xytext=(dx, dy), textcoords="offset points",
                fontsize="small", ha="left" if dx > 0 else "right",
                va="bottom" if dy > 0 else "top" if dy < 0 else "center",
            )  # fmt: skip
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in obstacles):
                placed.append(box)
                break
            text.remove()


def _marker_boxes(ax, points: pd.DataFrame, x: str, y: str, radius_pt: float) -> dict[tuple, Bbox]:
    """Around each plotted point, a box ``radius_pt`` out in display pixels, by its (x, y)."""
    radius = radius_pt * ax.figure.dpi / 72
    at = points[[x, y]].drop_duplicates()
    centres = ax.transData.transform(at.to_numpy())
    return {
        tuple(point): Bbox.from_extents(cx - radius, cy - radius, cx + radius, cy + radius)
        for point, (cx, cy) in zip(at.itertuples(index=False), centres, strict=True)
    }


def _plotted(column: pd.Series, name: str) -> pd.Series:
    """A metric's values as plotted: floats, bytes in MB."""
    values = pd.to_numeric(column, errors="coerce").astype(float)
    return values / MB if name in BYTES else values


def _axis(name: str) -> str:
    better = "higher" if metrics.higher_is_better(name) else "lower"
    return f"{name}{' in MB' if name in BYTES else ''} ({better} is better)"


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


def console_table(comparison: Comparison, width: int = CONSOLE_WIDTH) -> str:
    """The table as a person reads it in a terminal ``width`` wide, never wrapped: rank, run,
    the keys the runs differ in (short names), the step a pruned trial stopped at, the ranking
    metric and its untuned value, and with --pareto its two metrics and who is on the
    frontier; numbers as they mean (counts whole, bytes in MB), a key blank where it does not
    apply to a run's method. Keys that do not fit give way, least informative first; a footer
    says how many columns only the CSV has."""
    cells, headers = _console_cells(comparison), _headers(comparison)
    keys = _least_informative_first(cells, [key for key in comparison.swept if key in cells])
    cells, dropped = _cut_runs(cells, headers, width, RUN_FLOOR), []
    while _widest(_markdown(cells, headers)) > width and keys:
        dropped.append(keys.pop(0))
        cells = cells.drop(columns=dropped[-1])
    cells = _cut_runs(cells, headers, width, MIN_RUN_WIDTH)
    text = _markdown(cells, headers)
    footer = f"{len(comparison.table.columns) - len(cells.columns)} more columns in {CSV_FILE}"
    if dropped:
        footer += f", {len(dropped)} of them keys the runs differ in (left out to fit)"
    return f"{text}\n\n{footer}"


def _cut_runs(cells: pd.DataFrame, headers: dict[str, str], width: int, floor: int) -> pd.DataFrame:
    """``cells`` with the runs' names cut as far as the table needs to fit ``width``, to
    ``floor`` characters at the least (a sweep's names repeat the keys' columns)."""
    over = _widest(_markdown(cells, headers)) - width
    if over <= 0:
        return cells
    fitted = max(floor, cells["run"].str.len().max() - over)
    return cells.assign(run=cells["run"].map(lambda name: _fit(name, fitted)))


def _console_cells(comparison: Comparison) -> pd.DataFrame:
    """The console's columns (by the table's names) as text; those with nothing in them left
    out."""
    table, pair = comparison.table, comparison.pareto or ()
    untuned = comparison.metric + names.UNTUNED_SUFFIX
    wanted = ["run", *comparison.swept, "pruned", comparison.metric, untuned, *pair]
    wanted = [column for column in dict.fromkeys(wanted) if column in table]
    cells = pd.DataFrame({name: table[name].map(_formatter(name)) for name in wanted})
    cells["run"] = short_runs(comparison)
    for key in comparison.swept:
        cells[key] = cells[key].map(lambda value: _fit(value, VALUE_WIDTH))
    if pair:
        cells[PARETO] = table[PARETO].map({True: "*", False: ""})
    return cells.loc[:, (cells != "").any()]


def _formatter(column: str) -> Callable[[object], str]:
    """A column's values as text: rounded to what they mean, blank where there is none."""
    if column in BYTES:
        number = "{:,.1f}".format  # in MB (the header says so)
    elif column in COUNTS:
        number = "{:,.0f}".format
    elif column in ONE_DECIMAL:
        number = "{:,.1f}".format
    elif column in GENERATION_METRICS:
        number = "{:.2f}".format  # scores of 0-100
    else:
        number = "{:.4f}".format  # losses
    scale = MB if column in BYTES else 1

    def cell(value: object) -> str:
        if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
            return ""
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return str(value)
        shown = number(value / scale)
        return "<0.1" if column in BYTES and value and shown == "0.0" else shown  # not none

    return cell


def _headers(comparison: Comparison) -> dict[str, str]:
    """The console's headers: keys by their short names, the untuned value and bytes in MB
    as what they are."""
    reserved = ["rank", "run", "pruned", "untuned", PARETO]
    headers = short_names(comparison.swept, reserved)
    headers[comparison.metric + names.UNTUNED_SUFFIX] = "untuned"
    return headers | {name: f"{name.removesuffix('_bytes')} MB" for name in BYTES}


def short_names(keys: list[str], reserved: Sequence[str] = ()) -> dict[str, str]:
    """Each key by its last dotted part (``peft.r`` -> ``r``), or as many more as tell it apart
    from the other keys and from ``reserved`` (``peft.alpha``, ``trainer.alpha``)."""
    shorts = {}
    for key in keys:
        taken = set(reserved).union(*(_suffixes(other) for other in keys if other != key))
        free = [suffix for suffix in _suffixes(key) if suffix not in taken]
        shorts[key] = free[0] if free else key
    return shorts


def _suffixes(key: str) -> list[str]:
    """``peft.lora.r``: ``r``, ``lora.r``, ``peft.lora.r``."""
    parts = key.split(".")
    return [".".join(parts[-depth:]) for depth in range(1, len(parts) + 1)]


def short_runs(comparison: Comparison) -> pd.Series:
    """The runs' names cut to RUN_WIDTH, the keys in them by their short names (a sweep names a
    run by its overrides: ``peft.r=8,trainer.learning_rate=0.001``)."""
    shorts = short_names(comparison.swept)

    def short(name: str) -> str:
        settings = [override.partition("=") for override in name.split(",")]
        shortened = [
            f"{shorts[key]}={value}" if equals and key in shorts else key + equals + value
            for key, equals, value in settings
        ]
        return _fit(",".join(shortened), RUN_WIDTH)

    return comparison.table["run"].map(lambda name: short(str(name)))


def _least_informative_first(cells: pd.DataFrame, keys: list[str]) -> list[str]:
    """``keys`` by what they tell of the runs: fewest different values, then fewest runs with a
    value; of two alike, the later first."""

    def told(position: int) -> tuple[int, int, int]:
        values = cells[keys[position]][cells[keys[position]] != ""]
        return values.nunique(), len(values), -position

    return [keys[position] for position in sorted(range(len(keys)), key=told)]


def _markdown(cells: pd.DataFrame, headers: dict[str, str]) -> str:
    """A Markdown (pipe) table, the rank first, columns of numbers right-aligned: each column
    as wide as its widest entry (tabulate pads headers by two more)."""
    table = cells.rename(columns=headers).reset_index().astype(str)
    right = [all(map(_is_number, table[name][table[name] != ""])) for name in table]
    widths = [max(3, len(name), *table[name].str.len()) for name in table]
    layout = list(zip(widths, right, strict=True))

    def line(values: list[str]) -> str:
        padded = [v.rjust(w) if r else v.ljust(w) for v, (w, r) in zip(values, layout, strict=True)]
        return f"| {' | '.join(padded)} |"

    rule = "|".join("-" * (w + 1) + ":" if r else ":" + "-" * (w + 1) for w, r in layout)
    rows = [line(list(table.columns)), f"|{rule}|", *(line(list(row)) for row in table.values)]
    return "\n".join(rows)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").removeprefix("<"))
    except ValueError:
        return False
    return True


def _widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
