"""The Pareto frontier of two metrics (``peftlab compare --pareto A,B``): the runs no other run
beats on both, each metric in its own direction (lower loss, less memory, higher ROUGE-L)."""

from __future__ import annotations

from collections.abc import Collection

import pandas as pd

from peftlab import metrics, names
from peftlab.errors import PeftlabError

OPTION = "--pareto"
EXAMPLE = f"{names.EVAL_LOSS},{names.PEAK_MEMORY_BYTES}"


def parse(value: str) -> tuple[str, str]:
    """The two metrics of ``--pareto A,B``; one line naming what is allowed where it is not two
    different metrics whose direction peftlab knows."""
    pair = tuple(name.strip() for name in value.split(","))
    known = metrics.known_metrics()
    if len(pair) != 2 or not all(pair) or pair[0] == pair[1]:
        raise PeftlabError(
            f"{OPTION}={value!r}: two different metrics, comma-separated (e.g. {EXAMPLE}), of: "
            f"{', '.join(known)}"
        )
    for name in pair:
        if name not in known:
            raise PeftlabError(
                f"{OPTION}={value!r}: {name!r} is not a metric whose direction peftlab knows; "
                f"allowed: {', '.join(known)}"
            )
    return pair


def require_logged(pair: tuple[str, str], logged: Collection[str]) -> None:
    """One line naming the metrics the runs did log where one of ``pair`` none of them did."""
    for name in pair:
        if name not in logged:
            allowed = [known for known in metrics.known_metrics() if known in logged]
            raise PeftlabError(
                f"{OPTION}={','.join(pair)!r}: no run compared logged {name}; allowed here: "
                f"{', '.join(allowed) or 'none'}"
            )


def frontier(table: pd.DataFrame, x: str, y: str) -> pd.Series:
    """Whether each row is on the frontier of columns ``x`` and ``y``: no other row at least as
    good on both and better on one. Rows that tie are both on it; a row that lacks either value
    is on none (nor does it push any off)."""
    # Each metric turned to lower-is-better, so one comparison serves every direction.
    signs = [-1.0 if metrics.higher_is_better(name) else 1.0 for name in (x, y)]
    points = table[[x, y]].apply(pd.to_numeric, errors="coerce").astype(float).mul(signs).dropna()
    rows = list(points.itertuples(index=False, name=None))
    on = [not any(_dominates(other, row) for other in rows) for row in rows]
    return pd.Series(on, index=points.index, dtype=bool).reindex(table.index, fill_value=False)


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and a != b


def staircase(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The frontier's ``points`` in the order its step line joins them: from the best ``x`` to
    the best ``y``."""
    return points.sort_values(x, ascending=not metrics.higher_is_better(x), kind="stable")
