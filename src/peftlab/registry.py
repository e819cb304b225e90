"""The MLflow Model Registry: a comparison's best run as a version, the alias ``champion`` on
the best version so far (``models:/NAME@champion``)."""

from __future__ import annotations

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from peftlab import logged_model, metrics
from peftlab.compare import Comparison
from peftlab.errors import PeftlabError

CHAMPION = "champion"


def register_best(client: MlflowClient, comparison: Comparison, name: str) -> str:
    """Register the best run's logged model under ``name``; move ``champion`` to it unless the
    current champion is at least as good by the comparison's metric (a champion that never
    logged that metric gives way). Returns what happened, in one line."""
    metric = comparison.metric
    best = comparison.table.iloc[0]
    version = _version_of(client, name, best.run_id)
    champion = _champion(client, name)
    label = f"run {best.run} ({metric} {best[metric]:.4f})"
    if champion is not None and champion.version != version.version:
        kept = client.get_run(champion.run_id).data.metrics.get(metric)
        if kept is not None and _at_least_as_good(kept, best[metric], metric):
            return (
                f"{name} v{version.version}: {label}; {CHAMPION} stays on v{champion.version} "
                f"({metric} {kept:.4f})"
            )
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return f"{name} v{version.version}: {label}, now models:/{name}@{CHAMPION}"


def _at_least_as_good(kept: float, new: float, metric: str) -> bool:
    return kept >= new if metrics.higher_is_better(metric) else kept <= new


def _version_of(client: MlflowClient, name: str, run_id: str) -> ModelVersion:
    """The version of ``name`` holding the run's model, registered now if there is none."""
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if found:
        return found[0]
    mlflow.set_tracking_uri(client.tracking_uri)  # register_model resolves runs:/ through it
    try:
        return mlflow.register_model(f"runs:/{run_id}/{logged_model.NAME}", name)
    except MlflowException as error:
        raise PeftlabError(
            f"--register {name}: run {run_id} has no logged model (trained before peftlab "
            f"logged one); `peftlab rerun {run_id}` trains it again with one"
        ) from error


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
