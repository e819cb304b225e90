"""`peftlab dashboard`: optuna-dashboard on the latest search's study, seen in a real Chromium."""

import shutil
import sys
from pathlib import Path

import optuna
import pytest
from helpers.browser import CHROMIUM_ARGS, chromium
from helpers.cluster import free_port
from helpers.runners import peftlab_process
from helpers.servers import serving
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from playwright.sync_api import expect, sync_playwright

from peftlab import names

pytestmark = pytest.mark.process  # the peftlab command and optuna-dashboard seen in Chromium


def test_the_dashboard_shows_the_latest_searchs_trials_and_history(
    pruned_search, screenshots, tmp_path
):
    # The search's store and study, copied: into a journal that holds another study first, so
    # that the search's is not the storage's first (a dashboard on study 0 would show the other).
    shutil.copy(pruned_search / "mlruns" / "mlflow.db", tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    (parent,) = [r for r in client.search_runs(experiments) if names.STUDY_TAG in r.data.tags]
    name, storage = parent.data.tags[names.STUDY_TAG], parent.data.tags[names.STORAGE_TAG]
    journal = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    optuna.create_study(study_name="another", storage=journal)
    source = JournalStorage(JournalFileBackend(storage.removeprefix("journal:")))
    optuna.copy_study(from_study_name=name, from_storage=source, to_storage=journal)
    client.set_tag(parent.info.run_id, names.STORAGE_TAG, f"journal:{tmp_path}/optuna.journal")
    study_id = journal.get_study_id_from_name(name)
    trials = optuna.load_study(study_name=name, storage=journal).trials
    pruned = {t.number for t in trials if t.state == optuna.trial.TrialState.PRUNED}
    assert study_id != 0 and len(trials) == 4 and pruned

    executable = chromium()
    port = free_port()
    command = [
        sys.executable, "-m", "peftlab.cli",
        "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
        "dashboard", "--port", str(port),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    printed = tmp_path / "printed.txt"
    with serving(command, f"{base}/api/studies", stdout=printed), sync_playwright() as p:
        url = f"{base}/dashboard/studies/{study_id}"
        assert printed.read_text().startswith(f"optuna-dashboard for study {name!r} on {url} ")
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(url)
        expect(page.get_by_text(f"{name} (id={study_id})")).to_be_visible(timeout=60_000)
        expect(page.get_by_role("heading", name="History")).to_be_visible(timeout=60_000)
        # The optimization history plots one point per trial that has a value.
        expect(page.locator(".js-plotly-plot .scatterlayer .point").first).to_be_visible(
            timeout=30_000
        )
        page.screenshot(path=str(screenshots / "optuna-dashboard.png"), full_page=True)
        page.goto(f"{url}/trials")
        for trial in trials:
            item = page.get_by_role("listitem").filter(
                has=page.get_by_text(f"Trial {trial.number}", exact=True)
            )
            expect(item.first).to_be_visible()
            state = expect(item.first.get_by_text("Pruned", exact=True))
            if trial.number in pruned:
                state.to_be_visible()
            else:
                state.to_have_count(0)
        page.screenshot(path=str(screenshots / "optuna-dashboard-trials.png"), full_page=True)
        browser.close()


def test_without_a_search_the_dashboard_says_how_to_run_one(tmp_path: Path):
    result = peftlab_process("dashboard", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: no search found in this store: run one with `python train.py -m "
        "hparams_search=optuna`, or pass --storage and --study"
    )
