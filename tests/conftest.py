"""What every test gets: its fixtures (from tests/helpers/), private caches, no tracking URI
leaking between tests, the ``process`` marker on tests of process-starting fixtures.

The layout: ``test_<module>.py`` tests ``src/peftlab/<module>.py`` (``test_train.py`` train.py,
``test_optuna_sweeper.py`` the Hydra sweeper plugin); ``scenarios/`` the whole system through
real processes, servers and browsers (faults, Slurm, a team's server, the MLflow UI, the
dashboard, SmolLM2); ``helpers/`` what tests share (see its ``__init__``). Modules without a
file of their own are tested through the one that uses them: ``app`` by test_train.py and
scenarios/test_faults.py, ``interrupts`` and ``output_dirs`` by scenarios/test_faults.py,
``cache`` by test_modeling.py, ``console`` by test_train.py and test_pipeline.py, ``data_files``
by test_data.py, ``metrics`` by test_scoring.py, ``search`` by test_sweep.py,
``mlflow_model_code`` by test_logged_model.py, ``schema`` by test_config.py (the sections and
the tree they make compose together), ``errors`` everywhere.
"""

from __future__ import annotations

import gc
import os

import pytest

from peftlab.schema import register_configs

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


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory: pytest.TempPathFactory):
    """The tests' model conversions, Hugging Face files and matplotlib's font cache stay in
    their own temp folder, never in the user's ~/.cache (the variables reach the subprocesses
    too; matplotlib reads its own when first imported, after this)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFTLAB_CACHE", str(cache / "peftlab"))
        patch.setenv("HF_HOME", str(cache / "huggingface"))
        patch.setenv("MPLCONFIGDIR", str(cache / "matplotlib"))
        yield
