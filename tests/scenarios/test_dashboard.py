"""`peftlab dashboard`: optuna-dashboard on the latest search's study, seen in a real Chromium."""

import sys
from pathlib import Path

import pytest
from helpers.browser import CHROMIUM_ARGS, chromium
from helpers.cluster import free_port
from helpers.runners import peftlab_process
from helpers.servers import serving
from playwright.sync_api import expect, sync_playwright

pytestmark = pytest.mark.process  # the peftlab command and optuna-dashboard seen in Chromium


def test_the_dashboard_shows_the_latest_searchs_trials_and_history(pruned_search, screenshots):
    executable = chromium()
    port = free_port()
    command = [
        sys.executable, "-m", "peftlab.cli",
        "--tracking-uri", f"sqlite:///{pruned_search}/mlruns/mlflow.db",
        "dashboard", "--port", str(port),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with serving(command, f"{base}/api/studies"), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(f"{base}/dashboard/studies/0")
        expect(page.get_by_role("heading", name="History")).to_be_visible(timeout=60_000)
        # The optimization history plots one point per trial that has a value.
        expect(page.locator(".js-plotly-plot .scatterlayer .point").first).to_be_visible(
            timeout=30_000
        )
        page.screenshot(path=str(screenshots / "optuna-dashboard.png"), full_page=True)
        page.goto(f"{base}/dashboard/studies/0/trials")
        for number in range(4):
            expect(page.get_by_text(f"Trial {number}", exact=True).first).to_be_visible()
        expect(page.get_by_text("Pruned").first).to_be_visible()
        page.screenshot(path=str(screenshots / "optuna-dashboard-trials.png"), full_page=True)
        browser.close()


def test_without_a_search_the_dashboard_says_how_to_run_one(tmp_path: Path):
    result = peftlab_process("dashboard", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: no search found in this store: run one with `python train.py -m "
        "hparams_search=optuna`, or pass --storage and --study"
    )
