"""Scores of generated completions against their references, one module each, registered by
name (``generation.metrics``). Each knows whether higher is better, for ranking runs by it;
``higher_is_better`` tells it of any metric a run logs (losses, costs, scores) in one place.

Every module of this package is imported here, so a new metric is a new module and nothing
else changes.
"""

import importlib
import pkgutil

from peftlab.metrics.base import REGISTRY, Metric, higher_is_better, known_metrics, logged_scores

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "Metric", "higher_is_better", "known_metrics", "logged_scores"]
