"""The MLflow UI on a finished 2-job sweep, in a real headless Chromium: what a user sees."""

import json
from pathlib import Path

import pytest
from helpers.browser import CHROMIUM_ARGS, chromium
from helpers.servers import mlflow_server
from helpers.stores import sweep_parts
from playwright.sync_api import expect, sync_playwright

from peftlab import pipeline, tracking

pytestmark = pytest.mark.process  # an MLflow server seen in Chromium


def test_the_ui_shows_the_sweep_its_children_and_their_curves(sweep_run, screenshots):
    client, parent, children = sweep_parts(sweep_run)
    executable = chromium()
    with mlflow_server(sweep_run) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        experiment = f"{base}/#/experiments/{parent.info.experiment_id}"
        page.goto(f"{experiment}?{tracking.MODEL_TRAINING_VIEW}")

        # Model training mode: runs, models and the registry, not GenAI's traces and judges.
        expect(page.get_by_role("link", name="Model registry")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Observability", exact=True)).to_have_count(0)
        page.get_by_role("button", name="Close").click()  # the assistant's panel

        # The collapsed sweep row carries the best child's eval_loss; expanded, its children.
        sweep_row = page.locator(
            ".ag-pinned-left-cols-container .ag-row", has_text=parent.info.run_name
        )
        expect(sweep_row).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Columns").click()
        for metric in ("best_eval_loss", "eval_loss"):
            page.get_by_text(metric, exact=True).click()
        page.keyboard.press("Escape")
        assert cell(page, parent.info.run_name, "best_eval_loss") == pytest.approx(
            parent.data.metrics["best_eval_loss"]
        )
        sweep_row.locator("button").first.click()
        for child in children:
            assert cell(page, child.info.run_name, "eval_loss") == pytest.approx(
                child.data.metrics["eval_loss"]
            )

        # The chart view draws each child's train_loss curve.
        page.locator("label:has(input[value=CHART])").click()
        page.get_by_placeholder("Search metric charts").fill("loss")
        card = page.get_by_test_id("experiment-view-compare-runs-card").filter(
            has=page.get_by_text("train_loss", exact=True)
        )
        curves = card.locator(".scatterlayer .trace:has(path.point)")  # a run's line and points
        expect(curves).to_have_count(len(children), timeout=30_000)
        points = curves.evaluate_all("ts => ts.map(t => t.querySelectorAll('path.point').length)")
        steps = [len(client.get_metric_history(c.info.run_id, "train_loss")) for c in children]
        assert sorted(points) == sorted(steps)  # a point per logged step
        page.screenshot(path=screenshots / "mlflow-ui.png")
        browser.close()


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
        path = client.download_artifacts(child.info.run_id, pipeline.GENERATIONS_TABLE)
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
        page.get_by_role("option", name=pipeline.GENERATIONS_TABLE).click()
        page.get_by_role("option", name="samples.json").click()  # the probes: not this table
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
