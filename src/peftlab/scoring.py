"""Held-out generations, scored: the prompts of held-out examples completed greedily by a model
and compared with their references by the metrics of ``generation.metrics``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peftlab import formats, names
from peftlab.config import GenerationSettings
from peftlab.formats import Example
from peftlab.metrics import REGISTRY
from peftlab.schema import DatasetConfig


@dataclass(frozen=True)
class HeldOut:
    prompts: tuple[str, ...]
    references: tuple[str, ...]


@dataclass(frozen=True)
class Scores:
    completions: tuple[str, ...]
    rows: dict[str, list[float]]  # each metric's score of each row
    totals: dict[str, float]  # each metric's score of the held-out set


def held_out(
    rows: Sequence[Example], cfg: DatasetConfig, settings: GenerationSettings, tokenizer
) -> HeldOut | None:
    """The held-out prompts to complete and their references; None where there are none (plain
    text has no prompts; ``generation.eval_rows=0`` turns them off)."""
    fmt = formats.of(cfg)
    if not fmt.has_prompt or settings.eval_rows == 0:
        return None
    chosen = rows[: settings.eval_rows] if settings.eval_rows is not None else rows
    return HeldOut(
        tuple(fmt.prompt(example, tokenizer) for example in chosen),
        tuple(example.reference for example in chosen),
    )


def score(completions: Sequence[str], references: Sequence[str], names: list[str]) -> Scores:
    predictions, targets = list(completions), list(references)
    rows, totals = {}, {}
    for name in names:
        metric = REGISTRY[name]()
        rows[name] = metric.rows(predictions, targets)
        totals[name] = metric.corpus(predictions, targets, rows[name])
    return Scores(tuple(completions), rows, totals)


def logged_metrics(untuned: Scores, tuned: Scores) -> dict[str, float]:
    """``eval_<metric>`` of the tuned model and ``eval_<metric>_untuned`` of the base model."""
    return {f"{names.SCORE_PREFIX}{name}": value for name, value in tuned.totals.items()} | {
        f"{names.SCORE_PREFIX}{name}{names.UNTUNED_SUFFIX}": value
        for name, value in untuned.totals.items()
    }


def pairs(untuned: Scores, tuned: Scores) -> dict[str, tuple[float, float]]:
    """Each metric's score of the held-out set, untuned and tuned."""
    return {name: (untuned.totals[name], tuned.totals[name]) for name in tuned.totals}


def table(prompts: HeldOut, untuned: Scores, tuned: Scores) -> dict[str, list]:
    """One row per held-out prompt: what both models wrote, and each one's scores."""
    columns = {
        "prompt": list(prompts.prompts),
        "reference": list(prompts.references),
        "untuned": list(untuned.completions),
        "tuned": list(tuned.completions),
    }
    for name in tuned.rows:
        columns[f"{name}{names.UNTUNED_SUFFIX}"] = untuned.rows[name]
        columns[name] = tuned.rows[name]
    return columns
