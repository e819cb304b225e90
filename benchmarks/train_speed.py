"""Training speed: the notebook's recipe (a) against peftlab's default training path (b).

Both sides train the embedded SmolLM2-135M with the same data, epochs, learning rate, seed,
virtual tokens and init (RANDOM); they differ only in how they train. Each side runs in its
own process (peak RSS is per process), alternating a, b, a, b so both see the same machine.

    .venv/bin/python benchmarks/train_speed.py            # 6 epochs, rows 0-49, eval 100-164
    .venv/bin/python benchmarks/train_speed.py --quick    # 1 epoch, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = ROOT.parent / "shared" / "data" / "awesome-chatgpt-prompts.csv"
SIDES = {"a": "notebook recipe", "b": "peftlab default", "bare": "bare fp32 loop"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--column", default="prompt")
    parser.add_argument("--train-rows", default="0:50", help="start:stop of the rows to train on")
    parser.add_argument("--eval-rows", default="100:165", help="start:stop of held-out rows")
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--repeats", type=int, default=2, help="a/b pairs, medians reported")
    parser.add_argument("--quick", action="store_true", help="1 epoch, 1 repeat")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one measurement
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 1, 1
    return args


def rows(spec: str) -> range:
    start, stop = (int(part) for part in spec.split(":"))
    return range(start, stop)


def measure(args: argparse.Namespace) -> dict:
    """Train one side in this process; returns its figures."""
    import torch
    from datasets import load_dataset
    from omegaconf import OmegaConf
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
    from transformers import (
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from peftlab import console, data, modeling, training
    from peftlab.config import (
        DatasetConfig,
        ModelConfig,
        TrainerConfig,
        register_configs,
        typed_section,
    )

    register_configs()
    console.quiet_libraries()
    saved = OmegaConf.create({"model": OmegaConf.load(ROOT / "conf/model/smollm2-135m.yaml")})
    model_cfg = typed_section(saved, "model", ModelConfig)
    loaded = modeling.load(model_cfg)
    model, tokenizer = loaded.model, loaded.tokenizer
    table = load_dataset("csv", data_files=str(args.csv), split="train")
    dataset_cfg = DatasetConfig(name="bench", data_files=str(args.csv), text_column=args.column)
    train = data.tokenize(table.select(rows(args.train_rows)), tokenizer, dataset_cfg)
    held_out = data.tokenize(table.select(rows(args.eval_rows)), tokenizer, dataset_cfg)
    real_tokens = data.real_tokens(train) * args.epochs

    set_seed(42)
    peft_config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=4,
        prompt_tuning_init=PromptTuningInit.RANDOM,
    )
    peft_model = get_peft_model(model, peft_config)
    out = ROOT / "outputs" / "bench" / args.side
    if args.side == "a":
        train_args = TrainingArguments(
            output_dir=str(out), num_train_epochs=args.epochs, learning_rate=3e-3,
            per_device_train_batch_size=8, per_device_eval_batch_size=16, seed=42,
            use_cpu=not torch.cuda.is_available(), save_strategy="no", report_to="none",
            logging_steps=1, disable_tqdm=True,
        )  # fmt: skip
        trainer = Trainer(
            model=peft_model,
            args=train_args,
            train_dataset=train,
            data_collator=DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False),
        )
    else:
        cfg = TrainerConfig(num_train_epochs=args.epochs, learning_rate=3e-3)
        train_args = training.training_arguments(cfg, out)
        train_args.disable_tqdm = True
        trainer = training.build_trainer(
            peft_model, tokenizer, train_args, train, group_by_length=cfg.group_by_length
        )
    start = time.perf_counter()
    if args.side == "bare":
        bare_loop(peft_model, tokenizer, train, args.epochs)
    else:
        trainer.train()
    wall = time.perf_counter() - start
    eval_args = TrainingArguments(
        output_dir=str(out), per_device_eval_batch_size=16, report_to="none", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    eval_loss = training.evaluate_loss(peft_model, tokenizer, eval_args, held_out)
    return {
        "side": args.side,
        "real_tokens": real_tokens,
        "wall_s": wall,
        "tokens_per_s": real_tokens / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "eval_loss": eval_loss,
    }


def bare_loop(peft_model, tokenizer, train, epochs: float) -> None:
    """Forward + backward + Adam step over length-sorted batches: no Trainer, no extra padding."""
    import torch
    from transformers import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    order = sorted(range(len(train)), key=lambda i: len(train[i]["input_ids"]))
    batches = [collate([train[i] for i in order[s : s + 8]]) for s in range(0, len(order), 8)]
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=3e-3)
    peft_model.train()
    for _ in range(int(epochs)):
        for batch in batches:
            peft_model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()


def run_side(side: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--side", side, "--csv", str(args.csv),
               "--column", args.column, "--train-rows", args.train_rows,
               "--eval-rows", args.eval_rows, "--epochs", str(args.epochs)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"side {side} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> str:
    import torch
    import transformers

    med = {side: {key: statistics.median(r[key] for r in runs) for key in runs[0] if key != "side"}
           for side, runs in results.items()}  # fmt: skip
    lines = [
        f"CPU: {cpu_model()}, {torch.get_num_threads()} threads; torch {torch.__version__}, "
        f"transformers {transformers.__version__}; Python {platform.python_version()}",
        f"data: {args.csv.name} rows {args.train_rows} (train), {args.eval_rows} (held out); "
        f"{args.epochs:g} epochs; medians of {args.repeats} run(s) per side",
        "",
        "| side | real tokens/s | wall s | peak RSS MiB | held-out eval loss |",
        "|---|---:|---:|---:|---:|",
    ]
    for side, m in med.items():
        lines.append(
            f"| {side}: {SIDES[side]} | {m['tokens_per_s']:.1f} | {m['wall_s']:.1f} | "
            f"{m['peak_rss_mib']:.0f} | {m['eval_loss']:.4f} |"
        )
    a, b, bare = med["a"], med["b"], med["bare"]
    lines += [
        "",
        f"b/a real-token throughput: {b['tokens_per_s'] / a['tokens_per_s']:.2f}x (bar: >= 2.2x)",
        f"b/a eval loss: {b['eval_loss'] / a['eval_loss']:.4f} (bar: <= 1.01)",
        f"b/a peak RSS: {b['peak_rss_mib'] / a['peak_rss_mib']:.2f} (bar: <= 1.00)",
        f"b as a share of the bare loop's rate: {b['tokens_per_s'] / bare['tokens_per_s']:.0%}",
    ]
    return "\n".join(lines)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    args = parse_args()
    if args.side:
        print(json.dumps(measure(args)))
        return
    if not args.csv.is_file():
        sys.exit(f"--csv={args.csv}: no such file (the reference data lives in ../shared/data/)")
    results: dict[str, list[dict]] = {"a": [], "b": [], "bare": []}
    for _ in range(args.repeats):
        for side in results:
            results[side].append(run_side(side, args))
            print(f"  {side}: {results[side][-1]}", file=sys.stderr, flush=True)
    print(report(results, args))


if __name__ == "__main__":
    main()
