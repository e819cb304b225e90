"""peftlab compare: ranked tables and plots of a sweep, logged back to it."""

import shutil
import webbrowser
from itertools import combinations
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from helpers.matrices import CORE_METHODS
from helpers.runners import imported_top_level, peftlab, peftlab_process
from helpers.stores import new_store, store_runs, sweep_parts
from matplotlib.transforms import Bbox
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from peftlab import compare, names, pareto, shared_view
from peftlab.errors import PeftlabError
from peftlab.methods import REGISTRY


@pytest.fixture(scope="module")
def comparison(sweep_run: Path):
    client, _ = store_runs(sweep_run)
    return client, compare.collect(client)


def test_latest_sweep_is_ranked_by_held_out_loss(sweep_run: Path, tmp_path: Path):
    _, parent, children = sweep_parts(sweep_run)
    # A copy of the store with an older sweep in it too, whose runs have the lowest losses: a
    # ranking that mixed sweeps, or took the older, would put them first.
    shutil.copy(sweep_run / "mlruns" / "mlflow.db", tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = parent.info.experiment_id
    older = client.create_run(experiment, start_time=parent.info.start_time - 3_600_000,
                              tags={names.SWEEP_TAG: "true"})  # fmt: skip
    for loss in (0.5, 0.25):
        run = client.create_run(experiment, tags={names.PARENT_TAG: older.info.run_id})
        client.log_metric(run.info.run_id, names.EVAL_LOSS, loss)
        client.set_terminated(run.info.run_id)
    client.set_terminated(older.info.run_id)

    result = compare.collect(client)
    table = result.table
    assert result.parent.info.run_id == parent.info.run_id
    logged = {c.info.run_id: c.data.metrics for c in children}  # as the runs logged them
    ranked = sorted(logged, key=lambda run_id: logged[run_id][names.EVAL_LOSS])
    assert list(table.index) == [1, 2, 3, 4]
    assert list(table["run_id"]) == ranked
    assert list(table[names.EVAL_LOSS]) == [logged[r][names.EVAL_LOSS] for r in ranked]
    assert list(table["improvement"]) == pytest.approx(
        [logged[r][names.EVAL_LOSS_UNTUNED] - logged[r][names.EVAL_LOSS] for r in ranked]
    )
    assert result.swept == ["peft.num_virtual_tokens", "trainer.num_train_epochs"]
    assert [table[key].tolist() for key in result.swept] == [
        [client.get_run(r).data.params[key] for r in ranked] for key in result.swept
    ]


def test_tables_and_plots_are_written_and_logged_to_the_sweep(comparison, tmp_path: Path):
    client, result = comparison
    files = compare.write(result, client, tmp_path)
    compare.log_to_parent(client, result, files)
    written = {f.name for f in files}
    assert written == {
        "comparison.md",
        "comparison.csv",
        "train_loss.png",
        "eval_loss_vs_params.png",
    }
    csv = pd.read_csv(tmp_path / "comparison.csv")
    assert list(csv["rank"]) == [1, 2, 3, 4]
    assert "| rank |" in (tmp_path / "comparison.md").read_text().replace("   ", " ")
    for png in ("train_loss.png", "eval_loss_vs_params.png"):
        height, width, _ = matplotlib.image.imread(tmp_path / png).shape
        assert height > 300 and width > 500
    logged = client.list_artifacts(result.parent.info.run_id, "comparison")
    assert {Path(a.path).name for a in logged} == written


# One method swept four ways; every method swept once each.
@pytest.mark.parametrize("sweep", ["sweep_run", "method_sweep"])
def test_the_loss_plot_draws_each_runs_logged_curve_one_colour_per_method(sweep, request):
    client, _ = store_runs(request.getfixturevalue(sweep))
    result = compare.collect(client)
    (ax,) = compare.train_loss_figure(result, client).axes
    drawn = {line.get_label(): line for line in ax.get_lines()}
    colours: dict[str, set[str]] = {}
    for run in result.runs:
        history = sorted(client.get_metric_history(run.info.run_id, names.TRAIN_LOSS),
                         key=lambda m: m.step)  # fmt: skip
        method = run.data.params["peft.method"]
        line = drawn.pop(f"{method}: {run.info.run_name}")
        assert len(history) > 1
        assert list(line.get_xdata()) == [m.step for m in history]
        assert list(line.get_ydata()) == [m.value for m in history]
        colours.setdefault(method, set()).add(line.get_color())
    assert not drawn
    assert len(colours) == (1 if sweep == "sweep_run" else len(CORE_METHODS))
    assert all(len(colour) == 1 for colour in colours.values())  # a method's runs share one
    assert len(set.union(*colours.values())) == len(colours)  # and no other method has it


def test_the_eval_loss_plot_draws_each_run_against_each_swept_key(comparison):
    _, result = comparison
    figure = compare.eval_loss_figure(result)
    assert [ax.get_xlabel() for ax in figure.axes] == result.swept
    for ax, key in zip(figure.axes, result.swept, strict=True):
        (other,) = [k for k in result.swept if k != key]
        drawn = {
            (line.get_label(), x, y)
            for line in ax.get_lines()
            for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
        }
        expected = {
            (
                f"method={run.data.params['peft.method']}, {other}={run.data.params[other]}",
                run.data.params[key],
                run.data.metrics[names.EVAL_LOSS],
            )
            for run in result.runs
        }
        assert drawn == expected
        for line in ax.get_lines():  # each line in the order of its key's values
            assert list(line.get_xdata()) == sorted(line.get_xdata(), key=float)


@pytest.mark.process  # the command's exit code, as a user runs it
def test_compare_command_prints_the_ranking(sweep_run: Path, tmp_path: Path):
    result = peftlab_process(
        "compare", "--out", str(tmp_path / "out"), cwd=sweep_run, python=("-X", "importtime")
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not imported_top_level(result.stderr) & {"torch", "peft"}  # no model: seconds sooner
    header = result.stdout.splitlines()[0]
    assert "rank" in header and names.EVAL_LOSS in header and "num_virtual_tokens" in header
    assert (tmp_path / "out" / "comparison.md").is_file()


def test_compare_open_prints_and_opens_the_view_ranked_by_its_metric(
    sweep_run, tmp_path, monkeypatch
):
    opened = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    result = peftlab("compare", "--open", "--out", str(tmp_path), cwd=sweep_run)
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("MLflow UI: ")]
    assert line.startswith("MLflow UI: `make ui`, then http://127.0.0.1:5000/#/experiments/")
    assert opened == [line[line.index("http") :]]
    query = parse_qs(urlsplit(opened[0]).fragment.split("?", 1)[1])
    assert query["compareRunsMode"] == ["CHART"] and query["workflowType"] == ["machine_learning"]
    client, parent, _ = sweep_parts(sweep_run)
    tags = client.get_experiment(parent.info.experiment_id).tags
    state = shared_view.decode(tags[shared_view.TAG_PREFIX + query["viewStateShareKey"][0]])
    assert parent.info.run_id in state["searchFilter"]
    assert state["orderByKey"] == "metrics.`eval_loss`"


def test_experiment_mode_compares_runs_by_the_params_that_differ(sweep_run: Path, comparison):
    client, _ = comparison
    result = compare.collect(client, experiment="peftlab")
    assert result.parent is None
    assert set(result.swept) == {"peft.num_virtual_tokens", "trainer.num_train_epochs"}


def test_unknown_sweep_is_a_clear_error(comparison):
    client, _ = comparison
    with pytest.raises(PeftlabError, match="--sweep='nope': no such MLflow run"):
        compare.collect(client, sweep="nope")


def test_a_sweep_over_methods_fills_the_peft_column(method_sweep: Path, tmp_path: Path):
    client, _ = store_runs(method_sweep)
    result = compare.collect(client)
    table = result.table
    assert result.swept == ["peft"]
    assert sorted(table["peft"]) == sorted(CORE_METHODS)
    assert sorted(table["method"]) == sorted(REGISTRY[option.replace("-", "_")].method
                                             for option in CORE_METHODS)  # fmt: skip
    assert (table[names.TRAINABLE_PARAMS] > 0).all() and (table[names.ADAPTER_BYTES] > 0).all()
    relative = (
        100
        * (table[names.EVAL_LOSS_UNTUNED] - table[names.EVAL_LOSS])
        / table[names.EVAL_LOSS_UNTUNED]
    )
    assert (table["improvement_pct"] - relative).abs().max() < 1e-9
    compare.write(result, client, tmp_path)
    markdown = (tmp_path / "comparison.md").read_text()
    assert all(f"| {option} " in markdown for option in CORE_METHODS)


def test_a_task_sweep_ranks_by_a_generation_metric_higher_first(method_sweep: Path):
    client, _ = store_runs(method_sweep)
    result = compare.collect(client, metric="eval_rougeL")
    table = result.table
    assert table["eval_rougeL"].is_monotonic_decreasing
    assert {"eval_chrf", "eval_exact_match", "eval_rougeL_untuned"} <= set(table.columns)
    by_loss = compare.collect(client).table
    assert by_loss[names.EVAL_LOSS].is_monotonic_increasing
    with pytest.raises(PeftlabError, match=r"--metric='eval_bleu': no finished run logged it; "
                                           r"held-out metrics logged: .*eval_rougeL"):  # fmt: skip
        compare.collect(client, metric="eval_bleu")


def test_an_experiment_of_several_methods_prints_readably(method_sweep: Path):
    """A search across methods (the issue's 33 columns, 400 characters wide): the keys that
    differ by their short names, blank where a method does not have one, the rest left out to
    fit 120 columns; counts whole with thousands separators, bytes in MB, scores to 2
    decimals; the CSV keeps every column."""
    out = method_sweep / "compared"
    pareto = "trainable_params,adapter_bytes"  # a count and bytes
    result = peftlab("compare", "--experiment", "peftlab", "--metric", "eval_chrf",
                     "--pareto", pareto, "--out", str(out), cwd=method_sweep)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout.split("\n\nWrote")[0]
    assert max(len(line) for line in printed.splitlines()) <= 120
    header, rows, footer = console_rows(printed)
    assert "nan" not in printed and names.PRUNED_TAG not in header
    client, _ = store_runs(method_sweep)
    keys = compare.collect(client, experiment="peftlab", metric="eval_chrf").swept
    shown = {short: key for key, short in compare.short_names(keys).items() if short in header}
    assert "method" in shown and len(shown) < len(keys)  # the others left out to fit
    assert not [name for name in header if "." in name]  # short names, none alike here
    csv = pd.read_csv(out / "comparison.csv", dtype=str, keep_default_na=False)
    csv = csv.set_index(csv["rank"].astype(int))  # as written: full precision, blank for none
    for rank, row in rows.items():
        logged = csv.loc[rank]
        assert row["trainable_params"] == f"{int(logged[names.TRAINABLE_PARAMS]):,}"  # 25,504
        megabytes = f"{int(logged[names.ADAPTER_BYTES]) / 1e6:.1f}"
        assert row["adapter MB"] == (megabytes if megabytes != "0.0" else "<0.1")
        assert row["eval_chrf"] == f"{float(logged['eval_chrf']):.2f}"
        assert all(row[short] == logged[key] for short, key in shown.items())
    chrf = [float(row["eval_chrf"]) for row in rows.values()]
    assert chrf == sorted(chrf, reverse=True)
    left_out = f"{len(keys) - len(shown)} of them keys the runs differ in (left out to fit)"
    assert footer == f"{len(csv.columns) - len(header)} more columns in comparison.csv, {left_out}"
    assert {*compare.METRICS, *keys, "eval_chrf", compare.PARETO, "run_id"} <= set(csv.columns)


def test_a_key_is_blank_where_a_runs_method_has_none(method_sweep: Path):
    client, _ = store_runs(method_sweep)
    result = compare.collect(client, experiment="peftlab")
    header, rows, _ = console_rows(compare.console_table(result))
    shown = {short: key for key, short in compare.short_names(result.swept).items()
             if short in header}  # fmt: skip
    assert {"method", "num_virtual_tokens"} <= set(shown)  # a key of prompt-like methods only
    runs = {run.info.run_name: run for run in result.runs}
    for row, name in zip(rows.values(), result.table["run"], strict=True):
        params = runs[name].data.params
        assert all(row[short] == params.get(key, "") for short, key in shown.items())
    assert "" in {row["num_virtual_tokens"] for row in rows.values()}  # lora's, ia3's


def console_rows(printed: str) -> tuple[list[str], dict[int, dict[str, str]], str]:
    """The header, the rows by rank and the footer of a table ``peftlab compare`` printed."""
    *table, _, footer = printed.splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
            for line in table[2:]]  # fmt: skip
    return header, {int(row["rank"]): row for row in rows}, footer


def test_an_experiment_of_several_methods_plots_only_the_keys_that_vary(method_sweep: Path):
    """A key of one method alone (lora's ``peft.r``) or one each method sets its own way (the
    learning rate) is a column of the table, not a panel: every run of this experiment is
    another method, so the plot is of the held-out loss of each run, a point per method."""
    client, _ = store_runs(method_sweep)
    result = compare.collect(client, experiment="peftlab")
    assert {"peft.r", "trainer.learning_rate"} <= set(result.swept)
    (ax,) = compare.eval_loss_figure(result).axes
    assert ax.get_xlabel() == "run"
    drawn = {
        (line.get_label(), x, y)
        for line in ax.get_lines()
        for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
    }
    assert drawn == {(f"method={run.data.params['peft.method']}", run.info.run_name,
                      run.data.metrics[names.EVAL_LOSS]) for run in result.runs}  # fmt: skip


def test_compare_writes_to_outputs_compare_and_the_sweeps_id_by_default(sweep_run: Path):
    _, parent, _ = sweep_parts(sweep_run)
    result = peftlab("compare", cwd=sweep_run)
    assert result.returncode == 0, result.stderr[-2000:]
    folder = sweep_run / "outputs" / "compare" / parent.info.run_id
    assert {"comparison.md", "comparison.csv"} <= {f.name for f in folder.iterdir()}
    assert f"Wrote {Path('outputs', 'compare', parent.info.run_id)}" in result.stdout


# Six runs of a sweep with known values: on eval_loss x peak_memory_bytes the frontier is a, b
# (a tie) and c; on eval_rougeL (better higher) x peak_memory_bytes it is a, b and e. Read the
# other way round, rougeL would put d on it, not e; loss would put d on it, not c. f would beat
# them all, but its trial was pruned.
MB = 1_000_000
FRONTIER_RUNS = {
    "a": {names.EVAL_LOSS: 1.0, names.PEAK_MEMORY_BYTES: 100 * MB, "eval_rougeL": 50.0},
    "b": {names.EVAL_LOSS: 1.0, names.PEAK_MEMORY_BYTES: 100 * MB, "eval_rougeL": 50.0},
    "c": {names.EVAL_LOSS: 0.8, names.PEAK_MEMORY_BYTES: 200 * MB, "eval_rougeL": 45.0},
    "d": {names.EVAL_LOSS: 1.2, names.PEAK_MEMORY_BYTES: 150 * MB, "eval_rougeL": 40.0},
    "e": {names.EVAL_LOSS: 0.9, names.PEAK_MEMORY_BYTES: 300 * MB, "eval_rougeL": 65.0},
    "f": {names.EVAL_LOSS: 0.5, names.PEAK_MEMORY_BYTES: 50 * MB, "eval_rougeL": 99.0},
}
PRUNED = "f"
LETTER = "letter"  # a run's tag: its key in FRONTIER_RUNS
# Keys as many as a search across methods varies, two of them alike at the end.
WIDE_KEYS = {
    "peft": "lora",
    "peft.method": "LORA",
    "peft.r": "8",
    "peft.lora_alpha": "16",
    "peft.lora_dropout": "0.05",
    "peft.target_modules": "['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj']",
    "peft.num_virtual_tokens": "20",
    "peft.encoder_hidden_size": "128",
    "trainer.learning_rate": "0.0003",
    "trainer.num_train_epochs": "3",
    "trainer.per_device_train_batch_size": "4",
    "dataset.name": "quotes",
    "model.name": "tiny",
}


@pytest.fixture
def six_runs(tmp_path: Path) -> tuple[MlflowClient, str]:
    """A finished sweep of FRONTIER_RUNS in a store of its own under ``tmp_path`` (as ``peftlab
    compare`` run there opens it), and its parent's id: each run sets every WIDE_KEYS key to
    its own value, and has trainable params in the millions."""
    work = tmp_path
    new_store(work)
    client = MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db")
    experiment = client.create_experiment("peftlab", (work / "artifacts").as_uri())
    parent = client.create_run(experiment, run_name="sweep", tags={
        names.SWEEP_TAG: "true", names.SWEPT_KEYS_TAG: ",".join(WIDE_KEYS)})  # fmt: skip
    for number, (name, logged) in enumerate(FRONTIER_RUNS.items(), 1):
        settings = {key: f"{value}-{number}" for key, value in WIDE_KEYS.items()}
        tags = {names.PARENT_TAG: parent.info.run_id, "peft": settings.pop("peft")}
        if name == PRUNED:
            tags[names.PRUNED_TAG] = "5"
        run_name = ",".join(f"{key}={value}" for key, value in settings.items())
        run = client.create_run(experiment, run_name=run_name, tags=tags)
        client.set_tag(run.info.run_id, LETTER, name)
        numbers = {**logged, names.TRAINABLE_PARAMS: number * 1_234_567, names.ADAPTER_BYTES: 2e6}
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(key, value, 0, 0) for key, value in numbers.items()],
            params=[Param(key, value) for key, value in settings.items()],
        )
        client.set_terminated(run.info.run_id)
    client.set_terminated(parent.info.run_id)
    return client, parent.info.run_id


def letters(client: MlflowClient, run_ids) -> list[str]:
    return [client.get_run(run_id).data.tags[LETTER] for run_id in run_ids]


@pytest.mark.parametrize(
    "pair, frontier",
    [
        ((names.EVAL_LOSS, names.PEAK_MEMORY_BYTES), ["a", "b", "c"]),  # both better lower
        (("eval_rougeL", names.PEAK_MEMORY_BYTES), ["a", "b", "e"]),  # ROUGE-L better higher
        ((names.PEAK_MEMORY_BYTES, "eval_rougeL"), ["a", "b", "e"]),  # either way round
    ],
)
def test_the_frontier_is_the_runs_no_other_beats_on_both(six_runs, pair, frontier):
    client, parent_id = six_runs
    table = compare.collect(client, sweep=parent_id, pareto=pair).table
    assert table[compare.PARETO].dtype == bool
    assert sorted(letters(client, table.loc[table[compare.PARETO], "run_id"])) == frontier
    assert letters(client, table["run_id"])[-1] == PRUNED  # last, and on no frontier


def test_pareto_marks_the_table_and_the_csv_and_logs_its_scatter_to_the_sweep(six_runs, tmp_path):
    client, parent_id = six_runs
    result = peftlab("compare", "--pareto", "eval_rougeL,peak_memory_bytes",
                     "--out", str(tmp_path / "out"), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    header, rows, _ = console_rows(result.stdout.split("\n\nWrote")[0])
    assert header[-3:] == ["eval_rougeL", "peak_memory MB", compare.PARETO]
    csv = pd.read_csv(tmp_path / "out" / "comparison.csv").set_index("rank")
    marked = [rank for rank, row in rows.items() if row[compare.PARETO] == "*"]
    assert sorted(letters(client, csv.loc[marked, "run_id"])) == ["a", "b", "e"]
    assert list(csv.index[csv[compare.PARETO]]) == marked
    assert [row["peak_memory MB"] for row in rows.values()] == [
        f"{megabytes:.1f}" for megabytes in csv[names.PEAK_MEMORY_BYTES] / 1e6
    ]  # 200.0
    scatter = "pareto_eval_rougeL_vs_peak_memory_bytes.png"
    height, width, _ = matplotlib.image.imread(tmp_path / "out" / scatter).shape
    assert height > 300 and width > 500
    logged = client.list_artifacts(parent_id, "comparison")
    assert f"comparison/{scatter}" in {artifact.path for artifact in logged}


def test_the_scatter_draws_every_run_and_the_frontier_as_a_step_line(six_runs):
    client, parent_id = six_runs
    result = compare.collect(client, sweep=parent_id, pareto=("eval_rougeL", "peak_memory_bytes"))
    (ax,) = compare.pareto_figure(result).axes
    (line,) = ax.get_lines()
    assert line.get_label() == "Pareto frontier" and line.get_drawstyle() == "steps-post"
    # From the best ROUGE-L to the least memory: e, then a and b (a tie, one point).
    assert list(zip(line.get_xdata(), line.get_ydata(), strict=True)) == [
        (65.0, 300.0), (50.0, 100.0), (50.0, 100.0)]  # fmt: skip
    off = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
    assert off == {"beaten by another run": [[45.0, 200.0], [40.0, 150.0]],
                   "pruned: no trade-off": [[99.0, 50.0]]}  # fmt: skip
    labels = {text.get_text() for text in ax.texts}
    short = compare.short_runs(result)
    assert labels == {*short.drop(index=[3, 4]), "\n".join(short[[3, 4]])}  # a, b: one label
    assert all(label.startswith("method=LORA-") for label in short)  # keys by short names
    assert "in MB (lower is better)" in ax.get_ylabel() and "higher" in ax.get_xlabel()


def test_a_comparison_of_many_keys_fits_120_columns_with_counts_whole(six_runs, tmp_path):
    client, parent_id = six_runs
    pair = (names.TRAINABLE_PARAMS, names.PEAK_MEMORY_BYTES)
    result = compare.collect(client, sweep=parent_id, pareto=pair)
    compare.write(result, client, tmp_path)
    printed = compare.console_table(result)
    assert max(len(line) for line in printed.splitlines()) <= 120
    header, rows, footer = console_rows(printed)
    csv = pd.read_csv(tmp_path / "comparison.csv").set_index("rank")
    assert list(csv.columns) == list(result.table.columns)  # every column, the rank the index
    assert csv.loc[1, names.EVAL_LOSS] == 0.8 and csv.loc[1, names.TRAINABLE_PARAMS] == 3_703_701
    assert [row[names.TRAINABLE_PARAMS] for row in rows.values()] == [
        f"{count:,}" for count in csv[names.TRAINABLE_PARAMS]
    ]  # 3,703,701
    assert footer.startswith(f"{len(csv.columns) + 1 - len(header)} more columns in comparison.csv")
    assert "keys the runs differ in (left out to fit)" in footer
    shown = [name for name in header if name in compare.short_names(list(WIDE_KEYS)).values()]
    assert shown and len(shown) < len(WIDE_KEYS)


def test_keys_are_shown_by_their_last_part_unless_two_share_it():
    keys = ["peft.r", "peft.lora.alpha", "trainer.alpha", "dataset.name", "model.name", "peft"]
    assert compare.short_names(keys, reserved=["r"]) == {
        "peft.r": "peft.r",  # "r" is taken by a column of the table
        "peft.lora.alpha": "lora.alpha",
        "trainer.alpha": "trainer.alpha",
        "dataset.name": "dataset.name",
        "model.name": "model.name",
        "peft": "peft",
    }


@pytest.mark.parametrize(
    "value, allowed",
    [
        ("eval_loss", "two different metrics, comma-separated"),
        ("eval_loss,eval_loss", "two different metrics, comma-separated"),
        ("eval_loss,peak_memory_bytes,adapter_bytes", "two different metrics, comma-separated"),
        ("eval_loss,memory", "'memory' is not a metric whose direction peftlab knows; allowed: "),
        ("eval_chrf,peak_memory_bytes", "no run compared logged eval_chrf; allowed here: "),
    ],
)
def test_a_bad_pareto_value_is_one_line_and_writes_nothing(six_runs, tmp_path, value, allowed):
    client, parent_id = six_runs
    result = peftlab("compare", "--pareto", value, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: --pareto={value!r}: {allowed}")
    assert names.PEAK_MEMORY_BYTES in line  # what is allowed, named
    assert not (tmp_path / "out").exists() and not client.list_artifacts(parent_id)


def test_the_scatters_labels_cover_no_other_label_or_point_and_the_frontier_is_always_named():
    """Thirty runs crowded into a corner, as every method's sweep puts them: a label that would
    cover another label, or another run's point (where it would name the wrong one), moves to
    its point's other side or is left off; the frontier's never is."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({
        "run": [f"method-{i}" for i in range(30)], "pruned": None,
        names.EVAL_LOSS: [*rng.uniform(2.3, 2.5, 29), 4.0],
        names.PEAK_MEMORY_BYTES: [*rng.uniform(3e9, 3.3e9, 29), 9e9],  # one far off: a corner
    })  # fmt: skip
    pair = (names.PEAK_MEMORY_BYTES, names.EVAL_LOSS)
    table[compare.PARETO] = pareto.frontier(table, *pair)
    fig = compare.pareto_figure(compare.Comparison(table, [], [], None, names.EVAL_LOSS, pair))
    (ax,) = fig.axes
    boxes = [text.get_window_extent() for text in ax.texts]
    assert not any(a.overlaps(b) for a, b in combinations(boxes, 2))
    radius = compare.TIGHT_MARKER_RADIUS_PT * fig.dpi / 72  # a frontier point's margin
    plotted = table[list(pair)].assign(**{names.PEAK_MEMORY_BYTES: table[pair[0]] / compare.MB})
    for text, box in zip(ax.texts, boxes, strict=True):
        others = plotted[~np.isclose(plotted[pair[0]], text.xy[0])].to_numpy()
        for cx, cy in ax.transData.transform(others):
            assert not box.overlaps(
                Bbox.from_extents(cx - radius, cy - radius, cx + radius, cy + radius)
            )
    labelled = {text.get_text() for text in ax.texts}
    assert set(table["run"][table[compare.PARETO]]) <= labelled
    assert 5 < len(labelled) < 30  # crowded: some left off, not all
