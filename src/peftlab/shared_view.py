"""A sweep's comparison as the MLflow UI opens it: a shared view state and the link to it.

MLflow's UI saves a view of an experiment's runs (filter, sort, columns, chart cards) as an
experiment tag ``mlflow.sharedViewState.<key>`` and opens it from ``?viewStateShareKey=<key>``
in the experiment's address. peftlab writes that tag through the MLflow client (a local store
or a team's server alike) and prints the address: the sweep's runs listed best first, the keys
they differ in and what they cost beside their score, and charts that compare them.

The format is the one MLflow's UI reads (read from its source, MLFLOW_UI_VERSION's build): a
JSON object of the experiment page's search facets and UI state, as plain JSON or, past
PLAIN_LIMIT characters, compressed as the UI compresses it (``deflate;`` + base64). Of the UI
state, the UI drops what a shared view must not impose (``runsExpanded``, ``runsHidden``, ...):
the view lists the sweep's runs flat instead, which the UI does for a filtered list sorted by a
metric (it nests child runs under their parent only in its default start-time order).
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from peftlab import names
from peftlab.errors import PeftlabError
from peftlab.metrics.base import higher_is_better
from peftlab.tracking import MODEL_TRAINING_VIEW, ui_address

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from peftlab.compare import Comparison

log = logging.getLogger(__name__)

MLFLOW_UI_VERSION = "3.17.2"  # the UI whose shared view state this module writes
TAG_PREFIX = "mlflow.sharedViewState."
KEY_PARAM = "viewStateShareKey"
COMPRESSED = "deflate;"
PLAIN_LIMIT = 5000  # characters: beyond, compressed (a readable tag where it is small)
# What a run costs beside its score (and what it breaks: forgetting of general text).
COST_METRICS = (
    names.TRAIN_RUNTIME,
    names.TRAINABLE_PARAMS,
    names.ADAPTER_BYTES,
    names.PEAK_MEMORY_BYTES,
    names.EVAL_FORGETTING,
)
CURVES = (names.EVAL_LOSS, names.TRAIN_LOSS)  # line cards, one series per run
METHOD_PARAM = "peft.method"  # a sweep over the peft group varies this param
SECTION = "peftlab-comparison"
# matplotlib's (and peftlab compare's) ten colours: the UI's own, drawn from a run's id, repeat.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip


def column(kind: str, key: str) -> str:
    """A column's id in the UI (its sort key too): ``metrics.`eval_loss```."""
    return f"{kind}.`{key}`"


def view_state(
    runs: Sequence[Run],
    swept: Sequence[str],
    metric: str = names.EVAL_LOSS,
    parent_id: str | None = None,
    title: str = "Sweep",
) -> dict[str, Any]:
    """The UI's state for comparing ``runs`` (a sweep's, or any) by ``metric``: its search
    facets (the runs, best first) and UI state (columns, chart cards)."""
    columns = view_columns(runs, swept, metric)
    if parent_id is not None:
        wanted = f"tags.`{names.PARENT_TAG}` = '{parent_id}'"
    else:
        wanted = "attributes.run_id IN ({})".format(", ".join(f"'{r.info.run_id}'" for r in runs))
    return {
        # Search facets: which runs, in what order. A filter and a metric's order: a flat list.
        "searchFilter": wanted,
        "orderByKey": column("metrics", metric),
        "orderByAsc": not higher_is_better(metric),
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        # UI state: what the table and the charts show of them.
        "selectedColumns": columns,
        "columnOrder": columns,
        "columnWidths": {name: width(name) for name in columns},
        "runsHiddenMode": "SHOW_ALL",  # every run in the charts, not the UI's first 10
        "compareRunCharts": chart_cards(runs, swept, metric),
        "compareRunSections": chart_sections(title),
        "isAccordionReordered": True,  # the sections in this order, not sorted by name
        "hideEmptyCharts": True,
        "groupBy": None,
        "viewMaximized": False,
        "runListHidden": False,
    }


def view_columns(runs: Sequence[Run], swept: Sequence[str], metric: str) -> list[str]:
    """The table's columns, in order: the swept keys, the metric and its untuned value, the
    costs, then any other param the runs differ in."""
    settings = [setting_column(runs, key) for key in swept]
    settings = [name for name in settings if name is not None]
    others = [column("params", key) for key in differing_params(runs)]
    others = [name for name in others if name not in settings]
    untuned = f"{metric}{names.UNTUNED_SUFFIX}"
    scores = [column("metrics", name) for name in (metric, untuned) if logged(runs, name)]
    costs = [column("metrics", name) for name in COST_METRICS if logged(runs, name)]
    return [*settings, *scores, *costs, *others]


def chart_sections(title: str) -> list[dict[str, Any]]:
    """peftlab's cards first, unfolded; the charts the UI adds of every other metric one click
    away, folded."""
    ours = {"uuid": SECTION, "name": title, "display": True, "isReordered": True, "columns": 2}
    folded = [
        {"uuid": uuid, "name": name, "display": False, "isReordered": False}
        for uuid, name in (("model-metrics", "Model metrics"), ("system-metrics", "System metrics"))
    ]
    return [ours, *folded]


def width(column_id: str) -> int:
    """Pixels for a column's header to show its whole key."""
    key = column_id.split(".", 1)[1].strip("`")
    return max(100, 8 * len(key) + 48)


def chart_cards(runs: Sequence[Run], swept: Sequence[str], metric: str) -> list[dict[str, Any]]:
    """The metric per run (bar), each curve (line), the swept keys against the metric
    (parallel coordinates)."""
    count = max(len(runs), 10)
    base = {"runsCountToCompare": count, "metricSectionId": SECTION, "deleted": False}
    cards = [
        {
            **base,
            "uuid": f"bar-{metric}",
            "type": "BAR",
            "metricKey": metric,
            "isGenerated": False,
        }
    ]
    for name in CURVES:
        if logged(runs, name):
            cards.append(
                {
                    **base,
                    "uuid": f"line-{name}",
                    "type": "LINE",
                    "metricKey": name,
                    "isGenerated": False,
                    "xAxisKey": "step",
                    "scaleType": "linear",
                    "lineSmoothness": 0,
                    "displayPoints": True,
                    "useGlobalXaxisKey": False,
                    "useGlobalLineSmoothing": False,
                }
            )
    axes = [key for key in (param_of(runs, key) for key in swept) if key is not None]
    cards.append(
        {
            **base,
            "uuid": "parallel-swept",
            "type": "PARALLEL",
            "selectedParams": list(dict.fromkeys(axes)) or differing_params(runs)[:6],
            "selectedMetrics": [metric],
            "showAllRuns": True,
            "isGenerated": False,
        }
    )
    return cards


def setting_column(runs: Sequence[Run], key: str) -> str | None:
    """The column of a swept key: its param, or the tag a config group's choice is (``peft``)."""
    if any(key in run.data.params for run in runs):
        return column("params", key)
    if any(key in run.data.tags for run in runs):
        return column("tags", key)
    return None


def param_of(runs: Sequence[Run], key: str) -> str | None:
    """The param that tells a swept key's value: itself, or for the peft group, its method."""
    if any(key in run.data.params for run in runs):
        return key
    if key == "peft" and any(METHOD_PARAM in run.data.params for run in runs):
        return METHOD_PARAM
    return None


def differing_params(runs: Sequence[Run]) -> list[str]:
    from peftlab.compare import differing_params

    return differing_params(list(runs))


def logged(runs: Sequence[Run], metric: str) -> bool:
    return any(metric in run.data.metrics for run in runs)


def colours(runs: Sequence[Run]) -> dict[str, str]:
    """A colour of its own for each run that has none, best first: the UI draws a run's colour
    from its id, and two of three runs may share one."""
    colours = [run.data.tags.get(names.RUN_COLOR_TAG) for run in runs]
    taken = {colour for colour in colours if colour is not None}
    free = [colour for colour in PALETTE if colour not in taken] or list(PALETTE)
    bare = [run for run in runs if names.RUN_COLOR_TAG not in run.data.tags]
    return {run.info.run_id: free[i % len(free)] for i, run in enumerate(bare)}


def encode(state: dict[str, Any]) -> str:
    """The tag's value: JSON, compressed as MLflow's UI compresses it when it is long."""
    text = json.dumps(state, separators=(",", ":"))
    if len(text) <= PLAIN_LIMIT:
        return text
    return COMPRESSED + base64.b64encode(zlib.compress(text.encode())).decode()


def decode(value: str) -> dict[str, Any]:
    if value.startswith(COMPRESSED):
        value = zlib.decompress(base64.b64decode(value[len(COMPRESSED) :])).decode()
    return json.loads(value)


def share_key(parent_id: str | None, experiment_id: str, metric: str) -> str:
    """One view per sweep (or experiment) and metric: comparing again rewrites it."""
    return f"peftlab-{parent_id or 'experiment-' + experiment_id}-{metric}"


def experiment_route(experiment_id: str, **query: str) -> str:
    """The UI's route of an experiment's runs, in its Model training view."""
    extra = urlencode(query)
    return f"#/experiments/{experiment_id}/runs?{extra + '&' if extra else ''}{MODEL_TRAINING_VIEW}"


def publish(
    client: MlflowClient,
    runs: Sequence[Run],
    swept: Sequence[str],
    metric: str = names.EVAL_LOSS,
    parent: Run | None = None,
) -> str:
    """Write the view of ``runs`` to their experiment; returns its route in the UI (the
    experiment's runs in the chart view). Raises what the store raises."""
    experiment_id = (parent or runs[0]).info.experiment_id
    parent_id = parent.info.run_id if parent is not None else None
    title = parent.info.run_name if parent is not None else "runs"
    key = share_key(parent_id, experiment_id, metric)
    state = view_state(runs, swept, metric, parent_id, f"{title}, ranked by {metric}")
    client.set_experiment_tag(experiment_id, TAG_PREFIX + key, encode(state))
    try:
        for run_id, colour in colours(runs).items():
            client.set_tag(run_id, names.RUN_COLOR_TAG, colour)
    except Exception as error:  # a server may let this user tag the experiment, not the runs
        log.warning("The runs' colours were not saved in MLflow: %s", error)
    return experiment_route(experiment_id, **{KEY_PARAM: key, "compareRunsMode": "CHART"})


def link(client: MlflowClient, comparison: Comparison) -> str:
    """The address of ``comparison``'s view in the UI, the view written to its experiment;
    where it could not be written, one warning and the experiment's plain address."""
    parent, order = comparison.parent, list(comparison.table["run_id"])
    runs = sorted(comparison.runs, key=lambda run: order.index(run.info.run_id))  # best first
    experiment_id = (parent or runs[0]).info.experiment_id
    try:
        where = publish(client, runs, comparison.swept, comparison.metric, parent)
    except Exception as error:  # the store's, the server's, the network's: none may fail a sweep
        log.warning("The comparison's view was not saved in MLflow: %s", error)
        where = experiment_route(experiment_id)
    return ui_address(client.tracking_uri, where)


def sweep_link(client: MlflowClient, experiment_id: str, parent_id: str) -> str:
    """The address of the sweep's comparison by held-out loss (:func:`link`); of its
    experiment where no run finished with one."""
    from peftlab.compare import collect

    try:
        comparison = collect(client, sweep=parent_id)
    except PeftlabError:  # nothing to compare
        return ui_address(client.tracking_uri, experiment_route(experiment_id))
    except Exception as error:
        log.warning("The comparison's view was not saved in MLflow: %s", error)
        return ui_address(client.tracking_uri, experiment_route(experiment_id))
    return link(client, comparison)
