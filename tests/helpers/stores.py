"""MLflow stores of the tests: each a copy of one empty store made once a session, and the
runs in them."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

from peftlab import names, tracking


@functools.cache
def empty_store() -> Path:
    """An MLflow store with its schema made, once a session, under the tests' private cache:
    MLflow migrates a new SQLite store's schema in ~2 s, which every test's store would pay."""
    folder = Path(os.environ["PEFTLAB_CACHE"]).parent / "empty-store"
    folder.mkdir()
    SqlAlchemyStore(f"sqlite:///{folder}/mlflow.db", str(folder / "artifacts"))  # makes it
    return folder / "mlflow.db"


def new_store(work: Path) -> None:
    """The store under ``work`` (where ``configs.tiny_overrides`` points) as a copy of
    :func:`empty_store`, unless it has one. Tests of a store's own making go without."""
    store = work / "mlruns" / "mlflow.db"
    if not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_store(), store)


def forget_stores() -> None:
    """Let go of every store this process opened: MLflow keeps each store URI's store and its
    SQLAlchemy engine for the process's life (right for a run, one store). The hundreds of a
    test session's stores would hold some 10^5 objects that each garbage collection walks
    (``Trainer.train`` and each run's memory measure collect): a test's stores go with it."""
    for registry in (TrackingStoreRegistry, ModelRegistryStoreRegistry):
        registry._get_store_with_resolved_uri.cache_clear()
    for store in (SqlAlchemyStore, RegistryStore):
        for engine in store._engine_map.values():
            engine.dispose()
        store._engine_map.clear()


def store_runs(work: Path):
    """The MLflow client of the store under ``work`` and all its runs."""
    client = tracking.client(f"sqlite:///{work}/mlruns/mlflow.db")  # locked, as peftlab opens it
    experiments = [exp.experiment_id for exp in client.search_experiments()]
    return client, client.search_runs(experiments)


def sweep_parts(work: Path):
    """The sweep's parent run and its children, by job number."""
    client, runs = store_runs(work)
    (parent,) = [r for r in runs if r.data.tags.get(names.SWEEP_TAG) == "true"]
    children = [r for r in runs if r.data.tags.get(names.PARENT_TAG) == parent.info.run_id]
    return client, parent, sorted(children, key=lambda r: int(r.data.tags[names.JOB_NUM_TAG]))
