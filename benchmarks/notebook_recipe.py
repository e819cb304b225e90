"""The notebook's prompt-tuning recipe, the baseline of the benchmarks in this folder.

As a script it is one notebook run in its own process, what a user repeats per setting without
a sweep: load the model and data, generate from the base model, prompt-tune (HF Trainer,
DataCollatorForLanguageModeling(mlm=False), batch 8, fp32, random order, RANDOM init, lr 3e-3),
generate again, save the adapter, and print the held-out loss as JSON.

    .venv/bin/python benchmarks/notebook_recipe.py --num-virtual-tokens 8 --out /tmp/nb8
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = ROOT.parent / "shared" / "data" / "awesome-chatgpt-prompts.csv"
PROMPTS = [
    "I want you to act as a motivational coach.",
    "There are two nice things that should matter to you:",
]


@dataclass
class Workload:
    model: object  # the base transformers model
    tokenizer: object
    train: object  # tokenized datasets.Dataset
    held_out: object


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--column", default="prompt")
    parser.add_argument("--train-rows", default="0:50", help="start:stop of the rows to train on")
    parser.add_argument("--eval-rows", default="100:165", help="start:stop of held-out rows")
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument(
        "--model", help="a transformers checkpoint folder (default: the embedded SmolLM2-135M)"
    )


def require_csv(path: Path) -> None:
    if not path.is_file():
        sys.exit(f"--csv={path}: no such file (the reference data lives in ../shared/data/)")


def data_arguments(args: argparse.Namespace) -> list[str]:
    """``args``' data options as a command line, for a measurement in a process of its own."""
    model = ["--model", args.model] if args.model else []
    return ["--csv", str(args.csv), "--column", args.column, "--train-rows", args.train_rows,
            "--eval-rows", args.eval_rows, "--epochs", str(args.epochs), *model]  # fmt: skip


def machine() -> str:
    """GPU (what the Trainer trains on where there is one), CPU, threads and library versions."""
    import torch
    import transformers

    cpu = platform.processor() or "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    gpu = f"GPU: {torch.cuda.get_device_name()}; " if torch.cuda.is_available() else ""
    return (
        f"{gpu}CPU: {cpu}, {torch.get_num_threads()} threads; torch {torch.__version__}, "
        f"transformers {transformers.__version__}; Python {platform.python_version()}"
    )


def header(args: argparse.Namespace, setting: str) -> list[str]:
    """The machine and data lines each benchmark table starts with."""
    return [
        machine(),
        f"data: {args.csv.name} rows {args.train_rows} (train), {args.eval_rows} (held out); "
        f"{args.epochs:g} epochs; {setting}",
    ]


def rows(spec: str) -> range:
    start, stop = (int(part) for part in spec.split(":"))
    return range(start, stop)


def load_model(path: str | None = None):
    """The checkpoint at ``path``, or the embedded SmolLM2-135M (fp32 checkpoint converted from
    the GGUF), and its tokenizer."""
    from omegaconf import OmegaConf

    from peftlab import console, modeling
    from peftlab.config import ModelConfig
    from peftlab.schema import register_configs, typed_section

    register_configs()
    console.quiet_libraries()
    if path is not None:
        return modeling.load(ModelConfig(name_or_path=path))
    saved = OmegaConf.create({"model": OmegaConf.load(ROOT / "conf/model/smollm2-135m.yaml")})
    return modeling.load(typed_section(saved, "model", ModelConfig))


def load_workload(args: argparse.Namespace) -> Workload:
    """The embedded model and the CSV rows, tokenized as peftlab does."""
    from peftlab import data
    from peftlab.schema import DatasetConfig

    loaded = load_model(args.model)
    dataset_cfg = DatasetConfig(name="bench", data_files=str(args.csv), text_column=args.column)
    examples = data.load_examples(dataset_cfg).rows

    def tokenized(selected: range):
        chosen = [examples[i] for i in selected]
        return data.tokenize(chosen, loaded.tokenizer, dataset_cfg, train_on="all")[0]

    return Workload(
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        train=tokenized(rows(args.train_rows)),
        held_out=tokenized(rows(args.eval_rows)),
    )


def prompt_tuned(model, num_virtual_tokens: int):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
    from transformers import set_seed

    set_seed(42)
    config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.RANDOM,
    )
    return get_peft_model(model, config)


def notebook_collator(tokenizer):
    """The notebook's DataCollatorForLanguageModeling: labels are the padded input ids. The rows
    tokenized as peftlab does carry their own labels, left out here."""
    from transformers import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    return lambda rows: collate([{k: v for k, v in r.items() if k != "labels"} for r in rows])


def notebook_trainer(peft_model, tokenizer, train, epochs: float, out: Path):
    import torch
    from transformers import Trainer, TrainingArguments

    train_args = TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, learning_rate=3e-3,
        per_device_train_batch_size=8, per_device_eval_batch_size=16, seed=42,
        use_cpu=not torch.cuda.is_available(), save_strategy="no", report_to="none",
        logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    return Trainer(
        model=peft_model,
        args=train_args,
        train_dataset=train,
        data_collator=notebook_collator(tokenizer),
    )


def held_out_loss(peft_model, tokenizer, held_out, out: Path) -> float:
    import torch
    from transformers import TrainingArguments

    from peftlab import training

    eval_args = TrainingArguments(
        output_dir=str(out), per_device_eval_batch_size=16, report_to="none", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    return training.evaluate_loss(peft_model, tokenizer, eval_args, held_out)


def generate(model, tokenizer, prompt: str) -> str:
    inputs = tokenizer(prompt, return_tensors="pt")
    output = model.generate(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        max_new_tokens=48,
        repetition_penalty=1.5,
        eos_token_id=tokenizer.eos_token_id,
        do_sample=False,
    )
    return tokenizer.decode(output[0], skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--num-virtual-tokens", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    work = load_workload(args)
    before = [generate(work.model, work.tokenizer, p) for p in PROMPTS]
    peft_model = prompt_tuned(work.model, args.num_virtual_tokens)
    notebook_trainer(peft_model, work.tokenizer, work.train, args.epochs, args.out).train()
    after = [generate(peft_model, work.tokenizer, p) for p in PROMPTS]
    peft_model.save_pretrained(args.out / "adapter", safe_serialization=True)
    eval_loss = held_out_loss(peft_model, work.tokenizer, work.held_out, args.out)
    print(json.dumps({"eval_loss": eval_loss, "before": before, "after": after}))


if __name__ == "__main__":
    main()
