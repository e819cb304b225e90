"""What a run's libraries cost before it trains: importing torch, transformers, peft and mlflow
as train.py does (``peftlab.pipeline``), and one full garbage collection after (Trainer.train
and each memory measure collect), plainly (a) and as train.py imports them (b,
``peftlab.imports.heavy``: the collector paused while they load, then frozen). Each measure is a
fresh process, the sides in turn (a b a b ...); medians and b/a pair by pair.

    .venv/bin/python benchmarks/import_speed.py              # 5 pairs
    .venv/bin/python benchmarks/import_speed.py --repeats 9
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import notebook_recipe

SIDES = {"a": "contextlib.nullcontext()", "b": "imports.heavy()"}
MEASURE = """
import contextlib, gc, json, time
from peftlab import imports
start = time.perf_counter()
with {block}:
    from peftlab import console, pipeline
loaded = time.perf_counter()
gc.collect()
print(json.dumps({{"import_s": loaded - start, "collection_s": time.perf_counter() - loaded}}))
"""


def measured(side: str) -> dict[str, float]:
    code = MEASURE.format(block=SIDES[side])
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    printed.check_returncode()
    return json.loads(printed.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="pairs of processes")
    args = parser.parse_args()
    pairs = [(measured("a"), measured("b")) for _ in range(args.repeats)]
    print(f"{notebook_recipe.machine()}; {args.repeats} pairs of processes")
    print("| figure | a: plain | b: imports.heavy() | b/a |")
    print("|---|---:|---:|---:|")
    for figure in ("import_s", "collection_s"):
        a, b = ([pair[i][figure] for pair in pairs] for i in (0, 1))
        ratio = statistics.median(y / x for x, y in zip(a, b, strict=True))
        medians = f"{statistics.median(a):.3f} | {statistics.median(b):.3f}"
        print(f"| {figure} | {medians} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
