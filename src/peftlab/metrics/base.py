"""What every generation metric tells the rest of peftlab: its name, its direction, its score
of each row and of the whole held-out set (0-100); and the direction of every other metric a
run logs, for ranking runs and trading one metric off against another."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from peftlab import names

REGISTRY: dict[str, type[Metric]] = {}


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: makes a metric available as ``generation.metrics=[<cls.name>]``."""
    REGISTRY[cls.name] = cls
    return cls


class Metric(ABC):
    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True

    @abstractmethod
    def rows(self, predictions: list[str], references: list[str]) -> list[float]:
        """Each prediction's score against its reference."""

    def corpus(self, predictions: list[str], references: list[str], rows: list[float]) -> float:
        """The held-out set's score: the mean of the rows' unless the metric defines its own."""
        return sum(rows) / len(rows)


# The direction of every metric a run logs that is not a generation score (those say their own):
# losses, forgetting and costs are better lower, throughput higher.
LOWER_IS_BETTER = (
    names.EVAL_LOSS,
    names.EVAL_PERPLEXITY,
    names.TRAIN_LOSS,
    names.EVAL_FORGETTING,
    names.PEAK_MEMORY_BYTES,
    names.TRAIN_RUNTIME,
    names.ADAPTER_BYTES,
    names.TRAINABLE_PARAMS,
    names.SEARCH_STEPS,
    names.SEARCH_TOKENS,
)
HIGHER_IS_BETTER = (names.TRAIN_TOKENS_PER_SECOND,)


def logged_scores() -> list[str]:
    """The names the generation metrics are logged as: each score, then its untuned twin."""
    return [
        f"{names.SCORE_PREFIX}{name}{suffix}"
        for name in REGISTRY
        for suffix in ("", names.UNTUNED_SUFFIX)
    ]


def known_metrics() -> list[str]:
    """Every metric whose direction :func:`higher_is_better` knows (rather than assumes)."""
    return [*LOWER_IS_BETTER, names.EVAL_LOSS_UNTUNED, *HIGHER_IS_BETTER, *logged_scores()]


def higher_is_better(logged_name: str) -> bool:
    """Whether a logged metric (``eval_rougeL``, ``eval_chrf_untuned``, ``eval_loss``,
    ``train_tokens_per_second``) is better higher: generation scores as registered here, and
    throughput; losses, costs and anything unknown are better lower."""
    if logged_name in HIGHER_IS_BETTER:
        return True
    name = logged_name.removeprefix(names.SCORE_PREFIX).removesuffix(names.UNTUNED_SUFFIX)
    return name in REGISTRY and REGISTRY[name].higher_is_better
