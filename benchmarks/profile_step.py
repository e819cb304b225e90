"""Where one prompt-tuning step spends its time, and how close its matmuls run to the GEMM peak.

Profiles one fp32 forward + backward + AdamW step of the embedded SmolLM2-135M (batch 8 x
``--tokens`` tokens, 4 virtual tokens) with the torch profiler, times the same GEMM shapes
alone, counts the ops one step dispatches in fp32 and in bf16 autocast (on a GPU each op is a
kernel launch, and at batches this small launches, not arithmetic, bound a step), and with
``--compile`` compares torch.compile with eager over bucketed lengths.

    .venv/bin/python benchmarks/profile_step.py             # ~1-2 min
    .venv/bin/python benchmarks/profile_step.py --compile   # + compile time and steady state
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager, nullcontext

import notebook_recipe

# Input-gradient matmuls of a frozen weight have the same shapes as the forward ones.
GEMM_SHAPES = [(576, 576), (576, 192), (576, 1536), (1536, 576), (576, 49152)]
COMPILE_LENGTHS = [92, 60, 120] * 3  # a bucketed epoch's batches come in several lengths


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=92, help="tokens per example")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    return parser.parse_args()


def build_step(peft_model):
    import torch

    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad])

    def step(forward, length: int) -> float:
        ids = torch.randint(100, 40_000, (8, length))
        start = time.perf_counter()
        forward(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    return step


def profile(step, forward, length: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(2):
        step(forward, length)  # warm up the allocator and MKL
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        seconds = step(forward, length)
    events = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    mm = sum(event.self_cpu_time_total for event in events if event.key == "aten::mm")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))
    print(f"step {seconds:.2f} s, {8 * length / seconds:.1f} tokens/s; aten::mm {mm / total:.1%}")


def gemm_rates(rows: int) -> None:
    import torch

    for k, n in GEMM_SHAPES:
        a, b = torch.randn(rows, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        seconds = (time.perf_counter() - start) / 10
        print(f"GEMM {rows}x{k} @ {k}x{n}: {2 * rows * k * n / seconds / 1e9:.0f} GFLOP/s")


def dispatched_ops(step, peft_model, length: int) -> None:
    """Ops one step dispatches, and its time here, in fp32, in bf16 autocast as it was (the
    frozen base recast at every forward) and as peftlab trains now (the base held in bf16)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from peftlab import training

    class Counted(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            return func(*args, **(kwargs or {}))

    def autocast():
        return torch.autocast("cpu", torch.bfloat16)

    @contextmanager
    def held_in_bf16():
        with training.frozen_linears_in_bf16(peft_model), autocast():
            yield

    setups = {
        "fp32": nullcontext,
        "bf16 autocast, base recast every forward": autocast,
        "bf16 autocast, base held in bf16 (peftlab)": held_in_bf16,
    }
    for name, setup in setups.items():
        with setup():
            with Counted() as counted:
                step(peft_model, length)
            seconds = statistics.median(step(peft_model, length) for _ in range(3))
        print(f"{name}: {counted.ops} ops dispatched a step; {seconds:.2f} s a step here")


def compare_compile(step, peft_model) -> None:
    import torch

    for name, forward in ("eager", peft_model), ("compiled", torch.compile(peft_model)):
        seconds = [step(forward, length) for length in COMPILE_LENGTHS]
        steady = 8 * sum(COMPILE_LENGTHS[3:]) / sum(seconds[3:])
        print(f"{name}: first step {seconds[0]:.1f} s, steady state {steady:.1f} tokens/s")


def main() -> None:
    args = parse_args()
    model = notebook_recipe.load_model().model
    peft_model = notebook_recipe.prompt_tuned(model, num_virtual_tokens=4)
    peft_model.train()
    step = build_step(peft_model)
    print(notebook_recipe.machine())
    profile(step, peft_model, args.tokens)
    gemm_rates(8 * (args.tokens + 4))
    dispatched_ops(step, peft_model, args.tokens)
    if args.compile:
        compare_compile(step, peft_model)


if __name__ == "__main__":
    main()
