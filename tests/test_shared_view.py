"""The view of a sweep's runs that its link opens in the MLflow UI, as data: no store, no browser
(test_mlflow_ui.py opens it in Chromium)."""

import base64
import json
import logging
import re
import zlib
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag
from mlflow.exceptions import MlflowException

from peftlab import names, shared_view
from peftlab.compare import Comparison

PARENT = "0" * 32


def run(number: int, params: dict, metrics: dict, tags: dict | None = None) -> Run:
    run_id = f"{number:032x}"
    info = RunInfo(run_id, "7", "user", "FINISHED", 0, 1, "active", run_name=f"run {number}")
    data = RunData(
        metrics=[Metric(key, value, 0, 0) for key, value in metrics.items()],
        params=[Param(key, str(value)) for key, value in params.items()],
        tags=[
            RunTag(key, value) for key, value in {names.PARENT_TAG: PARENT, **(tags or {})}.items()
        ],
    )
    return Run(info, data)


def sweep(tokens=(2, 4, 8)) -> list[Run]:
    """A sweep's runs over virtual tokens, best (lowest eval_loss) first."""
    return [
        run(
            number,
            {"peft.num_virtual_tokens": n, "peft.method": "prompt-tuning", "output_dir": f"o/{n}"},
            {
                names.EVAL_LOSS: 9.0 + number,
                names.EVAL_LOSS_UNTUNED: 9.7,
                names.TRAIN_LOSS: 10.0,
                names.TRAIN_RUNTIME: 0.5,
                names.TRAINABLE_PARAMS: 64.0 * n,
                names.ADAPTER_BYTES: 6000.0,
                names.PEAK_MEMORY_BYTES: 5e8,
                names.EVAL_FORGETTING: 0.1,
                names.GRAD_NORM: 0.4,
            },
        )
        for number, n in enumerate(tokens, 1)
    ]


def test_the_view_lists_the_sweeps_runs_flat_best_first_and_what_matters_first():
    state = shared_view.view_state(sweep(), ["peft.num_virtual_tokens"], names.EVAL_LOSS, PARENT)
    # The sweep's runs only, sorted by a metric: the UI lists them flat, not under the parent.
    assert state["searchFilter"] == f"tags.`mlflow.parentRunId` = '{PARENT}'"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`eval_loss`", True)
    assert state["selectedColumns"] == [
        "params.`peft.num_virtual_tokens`",
        "metrics.`eval_loss`",
        "metrics.`eval_loss_untuned`",
        "metrics.`train_runtime`",
        "metrics.`trainable_params`",
        "metrics.`adapter_bytes`",
        "metrics.`peak_memory_bytes`",
        "metrics.`eval_forgetting`",
    ]  # output_dir differs too: not a choice worth a column
    assert state["columnOrder"] == state["selectedColumns"]
    assert state["runsHiddenMode"] == "SHOW_ALL"


def test_the_views_charts_compare_the_runs():
    runs = sweep(tokens=range(1, 13))  # more than the UI's 10 runs a chart by default
    state = shared_view.view_state(runs, ["peft.num_virtual_tokens"], names.EVAL_LOSS, PARENT)
    cards = {card["uuid"]: card for card in state["compareRunCharts"]}
    assert [(c["type"], c.get("metricKey")) for c in cards.values()] == [
        ("BAR", names.EVAL_LOSS),
        ("LINE", names.EVAL_LOSS),
        ("LINE", names.TRAIN_LOSS),
        ("PARALLEL", None),
    ]
    parallel = cards["parallel-swept"]
    assert parallel["selectedParams"] == ["peft.num_virtual_tokens"]
    assert parallel["selectedMetrics"] == [names.EVAL_LOSS]
    assert all(card["runsCountToCompare"] >= len(runs) for card in cards.values())
    (section, *folded) = state["compareRunSections"]
    assert all(card["metricSectionId"] == section["uuid"] for card in cards.values())
    assert section["display"] and not any(s["display"] for s in folded)
    assert state["isAccordionReordered"]  # ours first, not sorted by name


def test_a_method_sweep_shows_its_choice_and_puts_the_method_on_an_axis():
    runs = [
        run(1, {"peft.method": "lora", "peft.r": 8}, {names.EVAL_LOSS: 1.0}, {"peft": "lora"}),
        run(2, {"peft.method": "ia3"}, {names.EVAL_LOSS: 2.0}, {"peft": "ia3"}),
    ]
    state = shared_view.view_state(runs, ["peft"], names.EVAL_LOSS, PARENT)
    assert state["selectedColumns"] == [
        "tags.`peft`",
        "metrics.`eval_loss`",
        "params.`peft.method`",
        "params.`peft.r`",
    ]
    (parallel,) = [c for c in state["compareRunCharts"] if c["type"] == "PARALLEL"]
    assert parallel["selectedParams"] == ["peft.method"]


def test_a_score_better_higher_ranks_descending_and_brings_its_untuned_twin():
    runs = [run(i, {"lr": i}, {"eval_rougeL": i / 10, "eval_rougeL_untuned": 0.05}) for i in (1, 2)]
    state = shared_view.view_state(runs, ["lr"], "eval_rougeL")  # an experiment's runs
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`eval_rougeL`", False)
    assert state["selectedColumns"][1:3] == [
        "metrics.`eval_rougeL`",
        "metrics.`eval_rougeL_untuned`",
    ]
    ids = ", ".join(f"'{r.info.run_id}'" for r in runs)
    assert state["searchFilter"] == f"attributes.run_id IN ({ids})"


def test_each_run_gets_a_colour_of_its_own_and_keeps_one_it_has():
    runs = sweep(tokens=range(1, 5))
    runs[1].data.tags[names.RUN_COLOR_TAG] = shared_view.PALETTE[0]
    given = shared_view.colours(runs)
    assert set(given) == {r.info.run_id for r in runs} - {runs[1].info.run_id}
    assert len({*given.values(), shared_view.PALETTE[0]}) == len(runs)


def test_a_long_view_is_compressed_as_the_ui_compresses_it():
    small = {"searchFilter": "x"}
    assert shared_view.encode(small) == '{"searchFilter":"x"}'  # readable in the tag
    large = {"searchFilter": " OR ".join(f"run {i}" for i in range(2000))}
    value = shared_view.encode(large)
    assert value.startswith("deflate;") and len(value) < len(json.dumps(large)) / 2
    assert json.loads(zlib.decompress(base64.b64decode(value[8:]))) == large  # zlib's: pako's


class RefusingStore:
    """A server that finds the sweep's parent run, then answers with errors."""

    tracking_uri = "http://mlflow.example:5000"

    def get_run(self, run_id):
        return run(0, {}, {})

    def search_runs(self, *args, **kwargs):
        raise MlflowException("the server is down")

    def set_experiment_tag(self, *args):
        raise MlflowException("PERMISSION_DENIED")


def test_a_view_that_cannot_be_written_warns_once_and_links_the_experiment(caplog):
    runs = sweep()
    table = pd.DataFrame({"run_id": [r.info.run_id for r in runs]})
    comparison = Comparison(table, ["peft.num_virtual_tokens"], runs, None)
    with caplog.at_level(logging.WARNING, logger="peftlab"):
        link = shared_view.link(RefusingStore(), comparison)
        again = shared_view.sweep_link(RefusingStore(), "7", PARENT)
    plain = "http://mlflow.example:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert link == again == plain
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"], caplog.text


def test_the_installed_mlflow_ui_reads_every_field_the_view_sets():
    """What MLflow's UI (its JS build in the mlflow package) reads of a shared view state: the
    tag, the query parameter, the fields it takes, the chart cards' types and fields."""
    build = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    code = "\n".join(path.read_text(errors="replace") for path in build.glob("*.js"))

    def listed(first: str) -> set[str]:
        found = re.search(rf'\["{first}"(?:,"\w+")*\]', code)
        return set(json.loads(found.group(0))) if found else set()

    taken = listed("searchFilter") | listed("selectedColumns")  # search facets, UI state
    dropped = listed("runsExpanded")  # of the UI state, what a shared view may not set
    state = shared_view.view_state(sweep(), ["peft.num_virtual_tokens"], names.EVAL_LOSS, PARENT)
    cards = state["compareRunCharts"]
    card_fields = {key for card in cards for key in card} - {"uuid", "type"}
    missing = [
        *[name for name in (shared_view.TAG_PREFIX, shared_view.KEY_PARAM) if name not in code],
        *sorted(set(state) - taken | set(state) & dropped),
        *sorted(c["type"] for c in cards if f'="{c["type"]}"' not in code),
        *sorted(key for key in card_fields if f"this.{key}=" not in code),
    ]
    if missing:
        pytest.fail(
            f"MLflow {mlflow.__version__}'s UI does not read what shared_view.py writes (MLflow "
            f"{shared_view.MLFLOW_UI_VERSION}'s shared view state): {', '.join(missing)}",
            pytrace=False,
        )
