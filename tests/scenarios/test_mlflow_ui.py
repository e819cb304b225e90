"""The MLflow UI on finished sweeps, in a real headless Chromium: what a user sees."""

import json
from pathlib import Path

import mlflow
import pytest
from helpers.browser import CHROMIUM_ARGS, chromium
from helpers.runners import run_sweep
from helpers.servers import mlflow_server
from helpers.stores import sweep_parts
from playwright.sync_api import expect, sync_playwright

from peftlab import names, shared_view, tracking

pytestmark = pytest.mark.process  # an MLflow server seen in Chromium


@pytest.fixture(scope="module")
def three_jobs(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 3-job sweep of a tiny BLOOM over its virtual tokens, evaluated each epoch (a curve of
    held-out loss), and what it printed."""
    work = tmp_path_factory.mktemp("three-jobs")
    result = run_sweep(
        tiny_bloom,
        work,
        "peft.prompt_tuning_init=RANDOM",
        "trainer.eval_strategy=epoch",
        "peft.num_virtual_tokens=2,4,8",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return work, result.stdout


def test_the_sweeps_link_opens_its_runs_and_charts_that_compare_them(three_jobs, screenshots):
    """The link the sweep printed, opened with nothing clicked: its runs, best first, and
    chart cards comparing them (peftlab's shared view state, see shared_view.py)."""
    work, printed = three_jobs
    client, parent, children = sweep_parts(work)
    ranked = sorted(children, key=lambda run: run.data.metrics[names.EVAL_LOSS])
    run_names = [run.info.run_name for run in ranked]
    (line,) = [line for line in printed.splitlines() if line.startswith("MLflow sweep ")]
    route = line.split("http://127.0.0.1:5000/", 1)[1]  # a local store's: `make ui`, then ...
    assert "viewStateShareKey=" in route and tracking.MODEL_TRAINING_VIEW in route, line
    executable = chromium()
    with mlflow_server(work) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1120})
        page.goto(f"{base}/{route}")

        # Model training mode: runs, models and the registry, not GenAI's traces and judges.
        expect(page.get_by_role("link", name="Model registry")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Observability", exact=True)).to_have_count(0)
        page.get_by_role("button", name="Close").click()  # the assistant's panel

        cards = page.get_by_test_id("experiment-view-compare-runs-card")
        # The view's own section of charts: there only if the UI read the view.
        section = page.get_by_text(f"{parent.info.run_name}, ranked by eval_loss")
        try:
            expect(section).to_be_visible(timeout=30_000)
        except AssertionError:
            section = None
        if section is None:  # the link still opens the experiment; the test says why it failed
            assert f"#/experiments/{parent.info.experiment_id}" in page.url, page.url
            pytest.fail(FORMAT_CHANGED, pytrace=False)
        # Every run of the sweep listed, best first, the parent not among them.
        rows = page.locator(".ag-pinned-left-cols-container .ag-row")
        expect(rows).to_have_count(len(children), timeout=30_000)
        for name in run_names:
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        shown = rows.evaluate_all(
            "rs => rs.sort((a, b) => a.getAttribute('row-index') - b.getAttribute('row-index'))"
            ".map(r => r.innerText)"
        )
        assert [next(n for n in run_names if n in text) for text in shown] == run_names

        # eval_loss per run: a bar each, its value on it.
        bar = card(cards, names.EVAL_LOSS, ".barlayer")
        expect(bar.locator(".barlayer path")).to_have_count(len(children))
        values = sorted(float(t) for t in bar.locator(".barlayer text").all_text_contents())
        assert values == [round(r.data.metrics[names.EVAL_LOSS], 2) for r in ranked]
        # The curves: a line per run, a point per logged step.
        for metric in (names.EVAL_LOSS, names.TRAIN_LOSS):
            curves = card(cards, metric, ".scatterlayer").locator(
                ".scatterlayer .trace:has(path.point)"
            )
            expect(curves).to_have_count(len(children), timeout=30_000)
            points = curves.evaluate_all(
                "ts => ts.map(t => t.querySelectorAll('path.point').length)"
            )
            steps = [len(client.get_metric_history(c.info.run_id, metric)) for c in children]
            assert sorted(points) == sorted(steps) and min(steps) > 1  # a point per step
        # The swept key against held-out loss.
        parallel = cards.filter(has=page.get_by_text("Parallel Coordinates", exact=True))
        for axis in ("peft.num_virtual_tokens", names.EVAL_LOSS):
            expect(parallel.get_by_text(axis, exact=True).first).to_be_visible()
        page.screenshot(path=screenshots / "mlflow-ui.png")
        browser.close()


FORMAT_CHANGED = (
    f"MLflow {mlflow.__version__}'s UI did not open the sweep's view (shared_view.py writes the "
    f"shared view state of MLflow {shared_view.MLFLOW_UI_VERSION}'s UI)"
)


def card(cards, title: str, layer: str):
    """The chart card titled ``title`` that draws a plotly ``layer`` (bars, lines)."""
    found = cards.filter(has=cards.page.get_by_text(title, exact=True)).filter(
        has=cards.page.locator(layer)
    )
    expect(found).to_have_count(1, timeout=30_000)
    return found


def cell(page, run_name: str, metric: str) -> float:
    """The value shown in the runs table for ``run_name`` in the column of ``metric``."""
    row = run_row(page, run_name)
    expect(row).to_have_count(1, timeout=30_000)
    index = row.get_attribute("row-index")
    value = page.locator(
        f".ag-center-cols-container .ag-row[row-index='{index}'] [col-id='metrics.`{metric}`']"
    )
    return float(value.inner_text())


def run_row(page, run_name: str):
    """The runs table's row (its pinned name part) of the run named exactly ``run_name``."""
    rows = page.locator(".ag-pinned-left-cols-container .ag-row")
    return rows.filter(has=page.get_by_text(run_name, exact=True))


def test_the_evaluation_view_puts_the_runs_generations_side_by_side(method_sweep, screenshots):
    """A task sweep's runs logged their held-out generations as a table: the UI's evaluation
    view shows, for each held-out prompt, each run's completion beside the others'."""
    client, parent, children = sweep_parts(method_sweep)
    written = {}
    for child in children:
        path = client.download_artifacts(child.info.run_id, names.GENERATIONS_TABLE)
        table = json.loads(Path(path).read_text())
        rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
        written[child.info.run_name] = rows[0]["tuned"]
    role = rows[0]["prompt"].split("\n")[0]  # the first held-out prompt: "Role: ..."
    executable = chromium()
    with mlflow_server(method_sweep) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 2300, "height": 1000})  # 5 runs' columns
        experiment = f"{base}/#/experiments/{parent.info.experiment_id}"
        page.goto(f"{experiment}?{tracking.MODEL_TRAINING_VIEW}")
        expect(page.get_by_role("link", name="Model registry")).to_be_visible(timeout=60_000)
        page.get_by_role("button", name="Close").click()  # the assistant's panel
        sweep_row = run_row(page, parent.info.run_name)
        expect(sweep_row).to_be_visible(timeout=30_000)
        sweep_row.locator("button").first.click()  # its children, whose tables the view reads
        # The parent has no table: hidden, its column goes; the sidebar folded, room for runs.
        sweep_row.get_by_label("Hide run").dispatch_event("click")
        page.get_by_role("button", name="Toggle sidebar").click()
        page.locator("label:has(input[value=ARTIFACT])").click()
        page.get_by_test_id("dropdown-tables").click()
        page.get_by_role("option", name=names.GENERATIONS_TABLE).click()
        page.get_by_role("option", name=names.SAMPLES_FILE).click()  # the probes: not this table
        page.keyboard.press("Escape")
        page.get_by_text("Compare:").click()
        page.get_by_role("option", name="tuned", exact=True).click()

        for child in children:  # in the runs list, and heading its column of completions
            link = page.get_by_role("link", name=child.info.run_name, exact=True)
            expect(link).to_have_count(2)
        expect(page.get_by_text(role).first).to_be_visible(timeout=30_000)
        shown = page.locator("body").inner_text()
        for name, text in written.items():
            assert " ".join(text.split()) in " ".join(shown.split()), name
        page.screenshot(path=screenshots / "mlflow-generations.png")
        browser.close()
