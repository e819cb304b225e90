"""Sets each studied method's learning_rate to its best rate in the study CSV (temporary tool)."""
import csv, inspect, re, sys
from collections import defaultdict
from peftlab.methods import REGISTRY

rows = defaultdict(list)
for row in csv.DictReader(open(sys.argv[1])):
    if row["eval_loss"]:
        rows[row["method"]].append((float(row["learning_rate"]), float(row["eval_loss"])))
skip = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else set()
for cls in REGISTRY.values():
    option = cls.option()
    if option not in rows or option in skip:
        continue
    tried = sorted(rows[option])
    best, loss = min(tried, key=lambda t: t[1])
    edge = " (the highest tried)" if best == tried[-1][0] else " (the lowest tried)" if best == tried[0][0] else ""
    path = inspect.getsourcefile(cls)
    lines = open(path).read().split("\n")
    i = next(n for n, l in enumerate(lines) if "learning_rate: ClassVar[float] =" in l)
    j = i
    while lines[j - 1].strip().startswith("#"):
        j -= 1
    old = [l.strip()[2:] for l in lines[j:i]]
    m = re.search(r"#\s*(.*)$", lines[i])
    if m:
        old.append(m.group(1))
    rates = ", ".join(f"{r:g}" for r, _ in tried)
    words = (f"The study (BENCHMARKS, \"Every method\"): of {rates} on the reference CSV as a task, "
             f"{best:g}{edge} had the lowest held-out loss ({loss:.4f}).")
    if old:
        words = "Before the study: " + " ".join(old) + " " + words
    wrapped, line = [], "    #"
    for w in words.split():
        if len(line) + 1 + len(w) > 100:
            wrapped.append(line); line = "    #"
        line += " " + w
    wrapped.append(line)
    lines[j:i + 1] = wrapped + [f"    learning_rate: ClassVar[float] = {best:g}"]
    open(path, "w").write("\n".join(lines))
    print(option, best, edge)
