"""ROUGE-L F1 (longest common subsequence of words), Google's ``rouge-score``, stemmed."""

from __future__ import annotations

from peftlab.metrics.base import Metric, register


@register
class RougeL(Metric):
    name = "rougeL"

    def rows(self, predictions: list[str], references: list[str]) -> list[float]:
        from rouge_score.rouge_scorer import RougeScorer

        scorer = RougeScorer(["rougeL"], use_stemmer=True)
        return [
            100 * scorer.score(reference, prediction)["rougeL"].fmeasure
            for prediction, reference in zip(predictions, references, strict=True)
        ]
