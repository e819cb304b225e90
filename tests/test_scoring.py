"""Held-out generations scored by the registered metrics, and logged as an MLflow table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.stores import sweep_parts
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics import CHRF

from peftlab import metrics, names, scoring
from peftlab.errors import PeftlabError
from peftlab.schema import metric_names

REFERENCES = ["I want you to act as a poet.", "I want you to act as a chef today."]
PREDICTIONS = ["I want you to act as a poet.", "You act as a cook."]


def test_scores_are_the_libraries_own_on_a_0_to_100_scale():
    scores = scoring.score(PREDICTIONS, REFERENCES, list(metrics.REGISTRY))
    assert scores.rows["exact_match"] == [100.0, 0.0]
    assert scores.totals["exact_match"] == 50.0
    assert scores.rows["rougeL"][0] == pytest.approx(100.0)
    second = RougeScorer(["rougeL"], use_stemmer=True).score(REFERENCES[1], PREDICTIONS[1])
    assert scores.rows["rougeL"][1] == pytest.approx(100 * second["rougeL"].fmeasure)
    assert 0 < scores.rows["rougeL"][1] < 100
    corpus = CHRF().corpus_score(PREDICTIONS, [REFERENCES]).score
    assert scores.totals["chrf"] == pytest.approx(corpus)
    assert scores.totals["chrf"] != pytest.approx(sum(scores.rows["chrf"]) / 2)  # not the mean


def test_each_metric_knows_its_direction():
    assert metrics.higher_is_better("eval_rougeL")
    assert metrics.higher_is_better("eval_chrf_untuned")
    assert not metrics.higher_is_better(names.EVAL_LOSS)
    assert not metrics.higher_is_better(names.EVAL_PERPLEXITY)
    assert metrics.higher_is_better(names.TRAIN_TOKENS_PER_SECOND)  # throughput
    costs = [
        names.PEAK_MEMORY_BYTES,
        names.EVAL_FORGETTING,
        names.TRAIN_RUNTIME,
        names.ADAPTER_BYTES,
        names.TRAINABLE_PARAMS,
        names.SEARCH_STEPS,
        names.SEARCH_TOKENS,
    ]
    assert not any(metrics.higher_is_better(name) for name in costs)
    known = metrics.known_metrics()  # what compare --pareto accepts
    assert {*costs, names.EVAL_LOSS_UNTUNED, "eval_rougeL", "eval_chrf_untuned"} <= set(known)
    assert "eval_bleu" not in known and names.GRAD_NORM not in known


def test_an_unknown_metric_is_one_line():
    with pytest.raises(PeftlabError, match=r"^generation.metrics=\['bleu'\] is not allowed: names "
                                           r"of chrf, exact_match, rougeL"):  # fmt: skip
        metric_names(["rougeL", "bleu"])


def test_a_task_sweep_logs_scored_generations_once_untuned(method_sweep: Path):
    client, parent, children = sweep_parts(method_sweep)
    untuned = set()
    for child in children:
        logged = child.data.metrics
        scores = [
            f"eval_{m}{s}" for m in ("rougeL", "chrf", "exact_match") for s in ("", "_untuned")
        ]
        assert set(scores) <= set(logged)
        untuned.add(logged["eval_rougeL_untuned"])
        path = client.download_artifacts(child.info.run_id, names.GENERATIONS_TABLE)
        table = json.loads(Path(path).read_text())
        columns = table["columns"]
        assert columns[:4] == ["prompt", "reference", "untuned", "tuned"]
        assert {"rougeL", "rougeL_untuned", "chrf", "exact_match"} <= set(columns)
        rows = [dict(zip(columns, row, strict=True)) for row in table["data"]]
        assert len(rows) == 8  # every held-out row (dataset.eval_rows)
        assert all(r["prompt"].startswith("Role: ") and r["reference"] for r in rows)
        mean = sum(r["rougeL"] for r in rows) / len(rows)
        assert logged["eval_rougeL"] == pytest.approx(mean)
        run_dir = Path(child.data.tags[names.RUN_DIR_TAG])
        assert json.loads((run_dir / names.GENERATIONS_TABLE).read_text())["tuned"] == [
            r["tuned"] for r in rows
        ]
    assert len(untuned) == 1  # one base model: the same untuned score in every job
