"""What every generation metric tells the rest of peftlab: its name, its direction, its score
of each row and of the whole held-out set (0-100)."""

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


def higher_is_better(logged_name: str) -> bool:
    """Whether a logged metric (``eval_rougeL``, ``eval_chrf_untuned``, ``eval_loss``) is
    better higher; losses and anything not registered here are better lower."""
    name = logged_name.removeprefix(names.SCORE_PREFIX).removesuffix(names.UNTUNED_SUFFIX)
    return name in REGISTRY and REGISTRY[name].higher_is_better
