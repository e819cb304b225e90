"""Training speed: the notebook's recipe (a) against peftlab's default training path (b).

Both sides train the embedded SmolLM2-135M with the same data, epochs, learning rate, seed,
virtual tokens and init (RANDOM); they differ only in how they train. b32 is b in fp32 (what
``precision=auto`` gains or loses here), b-recast b with autocast recasting the frozen base at
every forward (what ``training.frozen_linears_in_bf16`` saves; where ``auto`` picks fp32, b
again), bare a plain fp32 loop (the ceiling). Each side runs in its own process (peak RSS is
per process), in turns (a, b, b32, b-recast, bare, a, ...) so all see the same machine.

    .venv/bin/python benchmarks/train_speed.py            # 6 epochs, rows 0-49, eval 100-164
    .venv/bin/python benchmarks/train_speed.py --quick    # 1 epoch, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import notebook_recipe

ROOT = notebook_recipe.ROOT
SIDES = {
    "a": "notebook recipe",
    "b": "peftlab default",
    "b32": "peftlab default in fp32",  # precision=auto's choice against fp32, on this machine
    "b-recast": "peftlab default, frozen base recast by autocast at every forward",
    "bare": "bare fp32 loop",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    notebook_recipe.add_data_arguments(parser)
    parser.add_argument("--repeats", type=int, default=2, help="a/b pairs, medians reported")
    parser.add_argument("--quick", action="store_true", help="1 epoch, 1 repeat")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "outputs" / "bench", help="the sides' trainer folders"
    )
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one measurement
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 1, 1
    return args


class CountingCollator:
    """Wraps a data collator to count the token positions pushed through the model."""

    def __init__(self, collate) -> None:
        self.collate, self.positions = collate, 0

    def __call__(self, features):
        batch = self.collate(features)
        self.positions += batch["input_ids"].numel()
        return batch


def measure(args: argparse.Namespace) -> dict:
    """Train one side in this process; returns its figures."""
    from peftlab import data

    work = notebook_recipe.load_workload(args)
    peft_model = notebook_recipe.prompt_tuned(work.model, num_virtual_tokens=4)
    out = args.out / args.side
    if args.side == "bare":
        collate = CountingCollator(notebook_recipe.notebook_collator(work.tokenizer))
        start = time.perf_counter()
        bare_loop(peft_model, collate, work.train, args.epochs)
    else:
        trainer = build_trainer(args.side, peft_model, work, out, args.epochs)
        collate = trainer.data_collator = CountingCollator(trainer.data_collator)
        start = time.perf_counter()
        trainer.train()
    wall = time.perf_counter() - start
    real_tokens = data.real_tokens(work.train) * args.epochs
    return {
        "side": args.side,
        "real_tokens": real_tokens,
        "padding": collate.positions / real_tokens,
        "wall_s": wall,
        "tokens_per_s": real_tokens / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "eval_loss": notebook_recipe.held_out_loss(peft_model, work.tokenizer, work.held_out, out),
    }


def build_trainer(side: str, peft_model, work: notebook_recipe.Workload, out, epochs: float):
    """Side a's notebook Trainer or side b's, with peftlab's default trainer settings (b32: in
    fp32 whatever ``precision=auto`` would pick)."""
    from peftlab import training
    from peftlab.config import Precision, TrainerConfig

    if side == "a":
        return notebook_recipe.notebook_trainer(peft_model, work.tokenizer, work.train, epochs, out)
    cfg = TrainerConfig(num_train_epochs=epochs, learning_rate=3e-3)
    if side == "b32":
        cfg.precision = Precision.fp32
    if side == "b-recast":  # the trainer as it was: autocast alone, no bf16 copy held
        training.frozen_linears_in_bf16 = lambda model, enabled=True: nullcontext()
    train_args = training.training_arguments(cfg, out)
    train_args.disable_tqdm = True
    return training.build_trainer(
        peft_model, work.tokenizer, train_args, work.train, group_by_length=cfg.group_by_length
    )


def bare_loop(peft_model, collate, train, epochs: float) -> None:
    """Forward + backward + Adam step over length-sorted batches: no Trainer, no extra padding."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # where the Trainer sides train
    examples = sorted(train, key=lambda row: len(row["input_ids"]))
    peft_model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(int(epochs)):
        for start in range(0, len(examples), 8):
            batch = {k: v.to(device) for k, v in collate(examples[start : start + 8]).items()}
            peft_model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()


def run_side(side: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--side", side, "--out", str(args.out),
               *notebook_recipe.data_arguments(args)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"side {side} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> str:
    med = {side: {key: statistics.median(r[key] for r in runs) for key in runs[0] if key != "side"}
           for side, runs in results.items()}  # fmt: skip
    lines = [
        *notebook_recipe.header(args, f"medians of {args.repeats} run(s) per side"),
        "",
        "| side | real tokens/s | wall s | positions / real token | peak RSS MiB | held-out loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for side, m in med.items():
        lines.append(
            f"| {side}: {SIDES[side]} | {m['tokens_per_s']:.1f} | {m['wall_s']:.1f} | "
            f"{m['padding']:.3f} | {m['peak_rss_mib']:.0f} | {m['eval_loss']:.4f} |"
        )
    a, b, b32, recast, bare = (med[side] for side in SIDES)
    lines += [
        "",
        f"b/a real-token throughput: {b['tokens_per_s'] / a['tokens_per_s']:.2f}x (bar: >= 2.2x)",
        f"b/a eval loss: {b['eval_loss'] / a['eval_loss']:.4f} (bar: <= 1.01)",
        f"b/a peak RSS: {b['peak_rss_mib'] / a['peak_rss_mib']:.2f} (bar: <= 1.00)",
        f"b as a share of the bare loop's rate: {b['tokens_per_s'] / bare['tokens_per_s']:.0%}",
        f"b/b32 (precision=auto, {training_precision()}, against fp32): "
        f"{b['tokens_per_s'] / b32['tokens_per_s']:.2f}x",
        f"b/b-recast (the frozen base cast to bf16 once, against at every forward): "
        f"{b['tokens_per_s'] / recast['tokens_per_s']:.2f}x",
    ]
    return "\n".join(lines)


def training_precision() -> str:
    """What ``precision=auto`` trains in on this machine."""
    from peftlab import training
    from peftlab.config import Precision

    return "bf16 autocast" if training.use_bf16(Precision.auto) else "fp32"


def main() -> None:
    args = parse_args()
    if args.side:
        print(json.dumps(measure(args)))
        return
    notebook_recipe.require_csv(args.csv)
    results: dict[str, list[dict]] = {side: [] for side in SIDES}
    for _ in range(args.repeats):
        for side in results:
            results[side].append(run_side(side, args))
            print(f"  {side}: {results[side][-1]}", file=sys.stderr, flush=True)
    print(report(results, args))


if __name__ == "__main__":
    main()
