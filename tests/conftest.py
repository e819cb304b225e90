"""What every test gets: its fixtures (from tests/helpers/), private caches, no tracking URI
leaking between tests, the ``process`` marker on tests of process-starting fixtures.

The layout: ``test_<module>.py`` tests ``src/peftlab/<module>.py`` (``test_train.py`` train.py,
``test_optuna_sweeper.py`` the Hydra sweeper plugin, ``test_makefile.py`` the Makefile's targets,
``test_benchmarks.py`` the benchmark scripts); ``scenarios/`` the whole system through
real processes, servers and browsers (faults, Slurm, a team's server, the MLflow UI, the
dashboard, SmolLM2); ``helpers/`` what tests share (see its ``__init__``). Modules without a
file of their own are tested through the one that uses them: ``output_dirs`` by
scenarios/test_faults.py, ``cache`` by test_modeling.py, ``console`` by test_train.py and
test_pipeline.py, ``data_files`` by test_data.py, ``metrics`` by test_scoring.py, ``pareto`` by
test_compare.py, ``search`` by test_sweep.py, ``mlflow_model_code`` by test_logged_model.py,
``schema`` by test_config.py (the sections and the tree they make compose together), ``errors``
everywhere.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path

# Before any library is imported: transformers, huggingface_hub and matplotlib read where their
# caches are once, when first imported (the fixture modules below import them). The tests'
# model conversions, Hugging Face files and font cache stay in a folder of their own, never in
# the user's ~/.cache; the variables reach the tests' subprocesses too.
CACHES = Path(tempfile.mkdtemp(prefix="peftlab-test-caches-"))
os.environ["PEFTLAB_CACHE"] = str(CACHES / "peftlab")
os.environ["HF_HOME"] = str(CACHES / "huggingface")
os.environ["MPLCONFIGDIR"] = str(CACHES / "matplotlib")
# `make test` runs the tests in one worker process per core (pytest-xdist): each worker's torch
# (and the processes its tests start) takes its share of the cores, not all of them each.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, share)))

import pytest  # noqa: E402

from peftlab.schema import register_configs  # noqa: E402

# Asserts in the helpers report what they compared, as the tests' own do.
pytest.register_assert_rewrite("helpers")
from helpers import workers  # noqa: E402
from helpers.stores import forget_stores  # noqa: E402

# The fixture modules: tiny models, shared runs, train.py processes, the browser's screenshots,
# real servers; pytest's own for a test session inside a test (test_workers.py).
pytest_plugins = [
    "helpers.tiny_models",
    "helpers.runners",
    "helpers.session_runs",
    "helpers.browser",
    "helpers.services",
    "pytester",
]

register_configs()

# Fixtures that start processes: train.py's, and the session's joblib workers, PostgreSQL, Slurm,
# an MLflow server. A test using one is a `process` test like those marked so; `make test-fast`
# leaves them out.
PROCESS_FIXTURES = {"start_train", "pruned_search", "postgres", "slurm", "mlflow_on_postgres"}

# Tests of a costly session fixture run in one worker: the daemons' tests together, each shared
# run's apart (workers.mark_groups; so do those of a module's own module-scoped fixture).
SESSION_GROUPS = {
    "daemons": {"postgres", "slurm", "mlflow_on_postgres"},
    **{run: {run} for run in ("sweep_run", "method_sweep", "runs_of_each_kind", "pruned_search",
                              "asha_search")},
}  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & workers.fixtures_of(item):
            item.add_marker(pytest.mark.process)
    workers.mark_groups(items, SESSION_GROUPS)


def pytest_unconfigure() -> None:
    shutil.rmtree(CACHES, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def garbage_frozen_at_each_module():
    """Each run collects garbage, often (Trainer.train, each run's memory measure): in this
    process, which holds every library the tests import, each collection would walk all of it,
    most of a tiny run's time. What is alive as a module starts (libraries, session fixtures,
    what lives to the session's end) is frozen after a collection: later collections pass it by.
    What an earlier module made and let go is garbage by then, collected before the freeze."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def tracking_uri_from_config_only():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; keep one test's store from leaking
    into the next test's subprocesses (the peftlab command honours that variable)."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(autouse=True)
def stores_closed_after_each_test():
    """What a test's MLflow stores hold is let go when it ends (see stores.forget_stores)."""
    yield
    forget_stores()
