"""peftlab compare: ranked tables and plots of a sweep, logged back to it."""

import re
import shutil
import webbrowser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import matplotlib.image
import pandas as pd
import pytest
from helpers.matrices import METHODS
from helpers.runners import imported_top_level, peftlab, peftlab_process
from helpers.stores import store_runs, sweep_parts
from mlflow import MlflowClient

from peftlab import compare, names, shared_view
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
    assert len(colours) == (1 if sweep == "sweep_run" else len(METHODS))
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
    assert "rank" in header and names.EVAL_LOSS in header and "peft.num_virtual_tokens" in header
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
    assert sorted(table["peft"]) == sorted(METHODS)
    assert sorted(table["method"]) == sorted(REGISTRY)
    assert (table[names.TRAINABLE_PARAMS] > 0).all() and (table[names.ADAPTER_BYTES] > 0).all()
    relative = (
        100
        * (table[names.EVAL_LOSS_UNTUNED] - table[names.EVAL_LOSS])
        / table[names.EVAL_LOSS_UNTUNED]
    )
    assert (table["improvement_pct"] - relative).abs().max() < 1e-9
    compare.write(result, client, tmp_path)
    markdown = (tmp_path / "comparison.md").read_text()
    assert all(f"| {option} " in markdown for option in METHODS)
    params = table[names.TRAINABLE_PARAMS].iloc[0]
    assert re.search(rf"\|\s+{params}\s+\|", markdown)  # a count, not 2304.0000


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
    """Only the params that differ, blank where a method does not have one, counts as
    integers, params as set; the CSV keeps every column."""
    result = peftlab("compare", "--experiment", "peftlab", "--metric", "eval_chrf",
                     "--out", str(method_sweep / "compared"), cwd=method_sweep)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split("\n\nWrote")[0].splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert "nan" not in result.stdout and names.PRUNED_TAG not in header
    assert "peft.r" in header and "peft.num_virtual_tokens" in header
    assert "dataset.name" not in header  # the same for every run
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]  # fmt: skip
    lora = next(row for row in rows if row["method"] == "lora")
    ia3 = next(row for row in rows if row["method"] == "ia3")
    assert lora["peft.r"] == "8" and ia3["peft.r"] == ""
    assert re.fullmatch(r"\d+", lora[names.TRAINABLE_PARAMS])
    assert re.fullmatch(r"\d+\.\d{4}", lora["eval_chrf"])
    chrf = [float(row["eval_chrf"]) for row in rows]
    assert chrf == sorted(chrf, reverse=True)
    csv = pd.read_csv(method_sweep / "compared" / "comparison.csv")
    assert len(csv.columns) > len(header)


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
