"""Exact match: 100 where the completion is the reference (surrounding whitespace aside)."""

from __future__ import annotations

from peftlab.metrics.base import Metric, register


@register
class ExactMatch(Metric):
    name = "exact_match"

    def rows(self, predictions: list[str], references: list[str]) -> list[float]:
        return [
            100.0 * (prediction.strip() == reference.strip())
            for prediction, reference in zip(predictions, references, strict=True)
        ]
