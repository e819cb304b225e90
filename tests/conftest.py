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

import pytest  # noqa: E402

from peftlab.schema import register_configs  # noqa: E402

# Asserts in the helpers report what they compared, as the tests' own do.
pytest.register_assert_rewrite("helpers")

# The fixture modules: tiny models, shared runs, the browser's screenshots, real servers.
pytest_plugins = [
    "helpers.tiny_models",
    "helpers.session_runs",
    "helpers.browser",
    "helpers.services",
]

register_configs()

# Session fixtures that start processes: joblib's workers, PostgreSQL, Slurm, an MLflow server.
# A test using one is a `process` test like those marked so; `make test-fast` leaves them out.
PROCESS_FIXTURES = {"pruned_search", "postgres", "slurm", "mlflow_on_postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.process)


def pytest_unconfigure() -> None:
    shutil.rmtree(CACHES, ignore_errors=True)


def pytest_collection_finish() -> None:
    """Every run's Trainer.train calls gc.collect() (accelerate's free_memory): in this process,
    which holds every library the tests import, ~0.5 s of a tiny run's ~1.4 s. What is alive
    now (modules, classes, functions) is not garbage: frozen, later collections pass it by."""
    gc.freeze()


@pytest.fixture(autouse=True)
def tracking_uri_from_config_only():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; keep one test's store from leaking
    into the next test's subprocesses (the peftlab command honours that variable)."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
