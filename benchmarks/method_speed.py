"""One training step of every PEFT method on the embedded SmolLM2-135M, against LoRA's, in one
run: each method at its defaults attached to the same base model, the same fp32 batch (8 x
``--tokens`` random tokens), a forward + backward + AdamW step, the median of ``--steps`` after
a warm-up. The bar: within 3x of LoRA's step.

    .venv/bin/python benchmarks/method_speed.py                 # every method
    .venv/bin/python benchmarks/method_speed.py --methods lora,vera --steps 5
    .venv/bin/python benchmarks/method_speed.py --methods pvera --profile   # where the time goes
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import notebook_recipe
import torch

from peftlab.methods import REGISTRY


def step_seconds(method, loaded, ids: torch.Tensor, steps: int, profile: bool) -> tuple[float, int]:
    """The median seconds of a training step of ``method`` and its trainable parameters; with
    ``--profile``, the operators that took most of the timed steps printed first."""
    torch.manual_seed(0)
    with method.attached(loaded.model, loaded.path) as peft_model:
        peft_model.train()
        trained = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=1e-4)

        def step() -> float:
            start = time.perf_counter()
            output = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
            output.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            return time.perf_counter() - start

        step()  # warms up the allocator and MKL
        if not profile:
            times = [step() for _ in range(steps)]
        else:  # timed with the profiler on: compare these times only with each other
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                times = [step() for _ in range(steps)]
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6))
        return statistics.median(times), sum(p.numel() for p in trained)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", help="comma-separated options; default: every method")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="print each method's top operators")
    args = parser.parse_args()
    methods = {method.option(): method for method in REGISTRY.values()}
    wanted = args.methods.split(",") if args.methods else sorted(methods)
    loaded = notebook_recipe.load_model()
    ids = torch.randint(100, 40_000, (8, args.tokens), generator=torch.Generator().manual_seed(0))
    results = {}
    for option in ["lora", *[option for option in wanted if option != "lora"]]:
        results[option] = step_seconds(methods[option](), loaded, ids, args.steps, args.profile)
        print(f"{option}: {results[option][0]:.3f} s", flush=True)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(f"\n{cpu}, {len(os.sched_getaffinity(0))} threads, torch {torch.__version__}, "
          f"batch 8 x {args.tokens} tokens, median of {args.steps} steps")  # fmt: skip
    print("\n| method | step s | vs LoRA | trainable params |\n|---|---:|---:|---:|")
    lora = results["lora"][0]
    for option, (seconds, params) in sorted(results.items(), key=lambda item: item[1][0]):
        flag = " **over 3x**" if seconds > 3 * lora else ""
        print(f"| {option} | {seconds:.3f} | {seconds / lora:.2f}x{flag} | {params:,} |")


if __name__ == "__main__":
    main()
