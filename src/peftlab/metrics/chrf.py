"""chrF (character n-gram F-score), ``sacrebleu``'s: per row, and over the set as sacrebleu
computes a corpus score (from the summed statistics, not the mean of the rows)."""

from __future__ import annotations

from peftlab.metrics.base import Metric, register


@register
class ChrF(Metric):
    name = "chrf"

    def rows(self, predictions: list[str], references: list[str]) -> list[float]:
        from sacrebleu.metrics import CHRF

        chrf = CHRF()
        return [
            chrf.sentence_score(prediction, [reference]).score
            for prediction, reference in zip(predictions, references, strict=True)
        ]

    def corpus(self, predictions: list[str], references: list[str], rows: list[float]) -> float:
        from sacrebleu.metrics import CHRF

        return CHRF().corpus_score(predictions, [references]).score
