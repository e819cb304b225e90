"""The table and the Pareto figure of BENCHMARKS' "Every method", from the learning-rate study's
CSV (``method_rates.py``): each method at its best rate, with what it learned, what it costs and
what it broke; the rates tried; and ROUGE-L against peak memory with the frontier drawn, by the
same figure ``peftlab compare --pareto`` logs.

    .venv/bin/python benchmarks/method_table.py rates.csv --figure docs/pareto-methods.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from method_rates import ROUGE

from peftlab import compare, names, pareto

PAIR = (names.PEAK_MEMORY_BYTES, ROUGE)  # the figure's x and y
MIB = 2**20


def best_rates(study: pd.DataFrame) -> pd.DataFrame:
    """Each method's row at its lowest held-out loss, with the rates it tried."""
    tried = study.groupby("method")["learning_rate"].apply(sorted).rename("rates")
    scored = study.dropna(subset=[names.EVAL_LOSS])
    best = scored.loc[scored.groupby("method")[names.EVAL_LOSS].idxmin()].set_index("method")
    return best.join(tried)


def markdown(best: pd.DataFrame) -> str:
    lora_seconds = best.loc["lora", names.TRAIN_RUNTIME]
    lines = [
        "| method | lr (tried) | held-out loss | vs untuned | ROUGE-L | forgetting | peak RSS MiB "
        "| train s | vs LoRA | adapter bytes | trainable params |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, row in best.sort_values(names.EVAL_LOSS).iterrows():
        rates = ", ".join(f"**{rate:g}**" if rate == row.learning_rate else f"{rate:g}"
                          for rate in row.rates)  # fmt: skip
        change = row[names.EVAL_LOSS] / row[names.EVAL_LOSS_UNTUNED] - 1
        lines.append(
            f"| {method} | {rates} | {row[names.EVAL_LOSS]:.4f} | {change:+.1%} "
            f"| {row[ROUGE]:.1f} | {row[names.EVAL_FORGETTING]:+.4f} "
            f"| {row[names.PEAK_MEMORY_BYTES] / MIB:,.0f} | {row[names.TRAIN_RUNTIME]:.0f} "
            f"| {row[names.TRAIN_RUNTIME] / lora_seconds:.1f}x "
            f"| {row[names.ADAPTER_BYTES]:,.0f} | {row[names.TRAINABLE_PARAMS]:,.0f} |"
        )
    return "\n".join(lines)


def figure(best: pd.DataFrame, path: Path) -> None:
    table = best.reset_index().rename(columns={"method": "run"}).assign(pruned=None)
    table[compare.PARETO] = pareto.frontier(table, *PAIR)
    comparison = compare.Comparison(table, [], [], None, ROUGE, PAIR)
    compare.pareto_figure(comparison).savefig(path, dpi=110, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="method_rates.py's CSV")
    parser.add_argument("--figure", type=Path, help="where the Pareto figure goes (PNG)")
    args = parser.parse_args()
    best = best_rates(pd.read_csv(args.study))
    untuned = best[[names.EVAL_LOSS_UNTUNED, ROUGE + names.UNTUNED_SUFFIX]].iloc[0]
    print(f"untuned: held-out loss {untuned.iloc[0]:.4f}, ROUGE-L {untuned.iloc[1]:.1f}\n")
    print(markdown(best))
    if args.figure:
        figure(best, args.figure)
        print(f"\n{args.figure}")


if __name__ == "__main__":
    main()
