"""The speed levers keep training correct: grouped batches, precision."""

from pathlib import Path

import pytest
import torch
from helpers.measures import logged_adapter_loss, real_tokens_per_epoch
from helpers.runners import run_tiny
from helpers.stores import store_runs
from peft import LoraConfig, get_peft_model
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import TrainerCallback

from peftlab import data, modeling, names, training
from peftlab.config import SAMPLES_DIR, ModelConfig, Precision, TrainerConfig
from peftlab.schema import DatasetConfig


@pytest.fixture(scope="module")
def llama_and_rows(tiny_llama: Path):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_llama)))
    cfg = DatasetConfig(
        name="p", data_files=str(SAMPLES_DIR / "prompts.csv"), text_column="prompt",
        train_rows=45, eval_rows=8, max_length=512,
    )  # fmt: skip
    return loaded, data.load_tokenized(cfg, loaded.tokenizer).train


def one_epoch(loaded, rows, tmp_path: Path, group_by_length: bool) -> list[dict]:
    args = training.training_arguments(TrainerConfig(per_device_train_batch_size=8), tmp_path)
    trainer = training.build_trainer(
        loaded.model, loaded.tokenizer, args, rows, group_by_length=group_by_length
    )
    return list(trainer.get_train_dataloader())


def unpadded(batches: list[dict]) -> list[tuple[int, ...]]:
    return sorted(
        tuple(ids[mask.bool()].tolist())
        for batch in batches
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    )


def test_grouped_batches_see_every_example_once_per_epoch(llama_and_rows, tmp_path: Path):
    loaded, rows = llama_and_rows
    grouped = one_epoch(loaded, rows, tmp_path, group_by_length=True)
    assert unpadded(grouped) == sorted(tuple(ids) for ids in rows["input_ids"])


def test_grouped_batches_carry_less_padding(llama_and_rows, tmp_path: Path):
    loaded, rows = llama_and_rows

    def padded_tokens(batches):
        return sum(batch["input_ids"].numel() for batch in batches)

    grouped = one_epoch(loaded, rows, tmp_path, group_by_length=True)
    shuffled = one_epoch(loaded, rows, tmp_path, group_by_length=False)
    assert data.real_tokens(rows) <= padded_tokens(grouped) < padded_tokens(shuffled)
    lengths = [len(ids) for ids in rows["input_ids"]]
    for batch in grouped:  # each batch is a run of neighbours in length order
        in_batch = batch["attention_mask"].sum(1).tolist()
        shortest, longest = min(in_batch), max(in_batch)
        assert sum(shortest < n < longest for n in lengths) == sum(
            shortest < n < longest for n in in_batch
        )


def test_eval_batches_are_every_held_out_row_longest_first(llama_and_rows, tmp_path: Path):
    loaded, rows = llama_and_rows
    args = training.training_arguments(TrainerConfig(), tmp_path)
    args.per_device_eval_batch_size = 8
    trainer = training.build_trainer(loaded.model, loaded.tokenizer, args, rows)
    batches = list(trainer.get_eval_dataloader(rows))
    in_order = [n for batch in batches for n in batch["attention_mask"].sum(1).tolist()]
    assert in_order == sorted((len(ids) for ids in rows["input_ids"]), reverse=True)
    assert unpadded(batches) == sorted(tuple(ids) for ids in rows["input_ids"])


def test_length_buckets_are_seeded_and_differ_between_epochs():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 14, 12, 11, 13]
    sampler = training.LengthBucketSampler(lengths, batch_size=4, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == sorted(second) == list(range(14))
    assert first != second
    sampler.set_epoch(0)
    assert list(sampler) == first
    for epoch in first, second:  # cut every 4 indices, as a DataLoader does
        batches = [sorted(lengths[i] for i in epoch[k : k + 4]) for k in range(0, 14, 4)]
        assert sorted(batches[:3]) == [[3, 4, 5, 6], [7, 8, 9, 10], [11, 12, 13, 14]]
        assert batches[3] == [1, 2]  # the incomplete batch last, or the cuts would shift


@pytest.mark.parametrize(("precision", "bf16"), [(Precision.fp32, False), (Precision.bf16, True)])
def test_an_explicit_precision_is_the_trainers(precision, bf16, tmp_path: Path):
    args = training.training_arguments(TrainerConfig(precision=precision), tmp_path)
    assert args.bf16 is bf16


AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [
        (AVX2_ONLY, False),
        (AVX2_ONLY.replace("avx512bw", "avx512bw avx512_bf16"), True),  # AMD EPYC (Zen 4)
        (AVX2_ONLY.replace("avx512bw", "amx_bf16 amx_tile"), True),  # Intel Sapphire Rapids
        ("model name\t: CPU with avx512_bf16 in its name\nflags\t\t: sse2\n", False),
    ],
)
def test_bf16_is_native_on_cpus_with_its_instructions(cpuinfo: str, native: bool):
    """precision=auto trains in bf16 only there: emulated, bf16 is slower than fp32."""
    assert training.cpu_has_bf16(cpuinfo) is native


def test_bf16_and_fp32_training_reach_the_same_eval_loss(tiny_llama: Path, tmp_path: Path):
    common = ["peft.prompt_tuning_init=RANDOM", "trainer.learning_rate=0.03"]
    fp32 = run_tiny(tiny_llama, tmp_path, *common, "trainer.precision=fp32", name="fp32")
    bf16 = run_tiny(tiny_llama, tmp_path, *common, "trainer.precision=bf16", name="bf16")
    # Stated tolerance: bf16 autocast changes held-out loss by under 1% relative; it does
    # change it (precision=bf16 was not ignored).
    assert bf16.eval_loss == pytest.approx(fp32.eval_loss, rel=0.01)
    assert bf16.eval_loss != fp32.eval_loss
    assert bf16.eval_loss < bf16.eval_loss_untuned


class CastsToBf16(TorchDispatchMode):
    """Counts the fp32 tensors cast to bf16 under it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and kwargs.get("dtype") == torch.bfloat16:
            self.count += args[0].dtype == torch.float32
        return func(*args, **kwargs)


def lora_on_tiny_llama(tiny_llama: Path):
    """A LoRA adapter on a tiny Llama of its own (not the module's shared one), its tokenizer."""
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_llama)))
    peft_model = get_peft_model(loaded.model, LoraConfig(r=4, target_modules="all-linear"))
    return peft_model, loaded.tokenizer


def loss_and_grads(peft_model, batch) -> tuple[float, list[torch.Tensor], int]:
    """One bf16-autocast step's loss and the adapter's gradients, and the casts it made."""
    peft_model.zero_grad()
    with CastsToBf16() as casts, torch.autocast("cpu", torch.bfloat16):
        loss = peft_model(**batch).loss
        loss.backward()
    grads = [p.grad.clone() for p in peft_model.parameters() if p.requires_grad]
    return loss.item(), grads, casts.count


def test_bf16_autocast_casts_the_frozen_base_once_to_the_same_results(
    tiny_llama: Path, llama_and_rows
):
    _, rows = llama_and_rows
    peft_model, tokenizer = lora_on_tiny_llama(tiny_llama)
    batch = training.PadToLongest(tokenizer.pad_token_id)([rows[i] for i in range(4)])
    loss, grads, casts = loss_and_grads(peft_model, batch)
    frozen = {(name, p.data_ptr()) for name, p in peft_model.named_parameters()}
    # Autocast casts these at every forward: each frozen Linear weight but the output layer's,
    # which is the (tied) input embedding and stays fp32.
    linears = [m for m in peft_model.modules() if isinstance(m, torch.nn.Linear)]
    tied = peft_model.get_output_embeddings()
    recast = [m for m in linears if not m.weight.requires_grad and m is not tied]
    with training.frozen_linears_in_bf16(peft_model):
        assert {m.weight.dtype for m in recast} == {torch.bfloat16}
        held = loss_and_grads(peft_model, batch)
    assert held[0] == loss  # the same bf16 copies autocast would make: the same numbers
    assert all(torch.equal(a, b) for a, b in zip(held[1], grads, strict=True))
    assert held[2] == casts - len(recast)
    # Afterwards the base is the fp32 model it was, its very tensors.
    assert {(name, p.data_ptr()) for name, p in peft_model.named_parameters()} == frozen
    assert {p.dtype for p in peft_model.parameters()} == {torch.float32}


class WeightDtypes(TrainerCallback):
    def __init__(self, weight: torch.nn.Parameter) -> None:
        self.weight, self.seen = weight, set()

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.add(self.weight.dtype)

    def on_evaluate(self, args, state, control, **kwargs):
        self.seen.add(self.weight.dtype)


@pytest.mark.parametrize("precision", [Precision.bf16, Precision.fp32])
def test_the_trainer_holds_the_frozen_base_in_bf16_only_while_it_trains_in_bf16(
    tiny_llama: Path, llama_and_rows, tmp_path: Path, precision: Precision
):
    _, rows = llama_and_rows
    peft_model, tokenizer = lora_on_tiny_llama(tiny_llama)
    cfg = TrainerConfig(
        num_train_epochs=1, learning_rate=1e-3, eval_strategy="epoch", precision=precision
    )
    args = training.training_arguments(cfg, tmp_path)
    trainer = training.build_trainer(
        peft_model, tokenizer, args, rows.select(range(8)), rows.select(range(4))
    )
    weight = peft_model.get_base_model().model.layers[0].mlp.up_proj.base_layer.weight
    dtypes = WeightDtypes(weight)
    trainer.add_callback(dtypes)
    trainer.train()
    expected = torch.bfloat16 if precision == Precision.bf16 else torch.float32
    assert dtypes.seen == {expected}
    assert weight.dtype == torch.float32


def test_held_out_loss_is_the_mean_over_every_held_out_token(llama_and_rows, tmp_path: Path):
    """Whatever the batch size: Trainer's own loop (a mean of batch means) moves with it, and a
    set shared out among processes would count repeated rows."""
    loaded, rows = llama_and_rows
    loss_sum, tokens = 0.0, 0
    with torch.no_grad():
        for row in rows:  # one at a time, the model's own loss summed
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            logits = loaded.model(input_ids=ids).logits[0, :-1]
            loss_sum += float(
                torch.nn.functional.cross_entropy(logits, labels[0, 1:], reduction="sum")
            )
            tokens += int((labels[0, 1:] != -100).sum())
    for batch in (1, 3, 16):
        cfg = TrainerConfig(per_device_eval_batch_size=batch, precision=Precision.fp32)
        args = training.training_arguments(cfg, tmp_path)
        loss = training.evaluate_loss(loaded.model, loaded.tokenizer, args, rows)
        assert loss == pytest.approx(loss_sum / tokens, abs=1e-5), batch


def test_the_last_checkpoint_is_the_latest_complete_one(tmp_path: Path):
    """A process killed while saving leaves a checkpoint without its trainer_state.json (written
    last), or with it cut short: resuming takes the one before."""
    for step, state in [(4, '{"global_step": 4}'), (8, None), (12, '{"global_st')]:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    assert training.last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert training.last_checkpoint(tmp_path / "none-yet") is None


def eval_curve(work: Path) -> list[tuple[int, float]]:
    client, (run,) = store_runs(work)
    history = client.get_metric_history(run.info.run_id, names.EVAL_LOSS)
    return [(m.step, m.value) for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


def test_eval_strategy_epoch_draws_an_eval_loss_curve(tiny_bloom: Path, tmp_path: Path):
    result = run_tiny(
        tiny_bloom, tmp_path, "trainer.num_train_epochs=3", "trainer.eval_strategy=epoch"
    )
    curve = eval_curve(tmp_path)
    # 16 rows in batches of 4: an evaluation after steps 4, 8, 12, then the final one.
    assert [step for step, _ in curve] == [4, 8, 12, 12]
    # The last evaluation during training and the final one are of the same adapter: the one
    # logged, reloaded from the store.
    reloaded = logged_adapter_loss(tmp_path, tiny_bloom, result.run_id)
    assert curve[-1][1] == pytest.approx(curve[-2][1]) == pytest.approx(reloaded, rel=1e-6)


def test_steps_strategies_evaluate_and_save_every_n_steps_keeping_the_latest(
    tiny_bloom: Path, tmp_path: Path
):
    run_tiny(
        tiny_bloom, tmp_path, "trainer.num_train_epochs=3",  # 12 steps
        "trainer.eval_strategy=steps", "trainer.eval_steps=3",
        "trainer.save_strategy=steps", "trainer.save_steps=5",
    )  # fmt: skip
    assert [step for step, _ in eval_curve(tmp_path)] == [3, 6, 9, 12, 12]
    # Saved at steps 5 and 10 and at the last (Trainer's own end-of-training save with
    # steps); only the latest is kept.
    checkpoints = [path.name for path in (tmp_path / "run" / "trainer").glob("checkpoint-*")]
    assert checkpoints == ["checkpoint-12"]


def test_early_stopping_ends_training_on_the_best_adapter(tiny_bloom: Path, tmp_path: Path):
    # At a constant high rate, the held-out loss of this LoRA stops improving after 4 epochs.
    result = run_tiny(
        tiny_bloom, tmp_path, "peft=lora", "trainer.learning_rate=0.03",
        "trainer.lr_scheduler_type=constant", "trainer.num_train_epochs=12",
        "trainer.eval_strategy=epoch", "trainer.early_stopping_patience=1",
    )  # fmt: skip
    curve = eval_curve(tmp_path)
    during = curve[:-1]
    assert len(during) < 12  # stopped early
    best = min(loss for _, loss in during)
    assert during[-1][1] > best  # it stopped because the last evaluation was no better
    assert result.eval_loss == pytest.approx(best)  # and kept the best adapter
    assert curve[-1] == (during[-1][0], pytest.approx(best))
    # Throughput over the epochs trained, not the 12 planned.
    _, (run,) = store_runs(tmp_path)
    tokens = len(during) * real_tokens_per_epoch(tiny_bloom)
    seconds = run.data.metrics[names.TRAIN_RUNTIME]
    assert run.data.metrics[names.TRAIN_TOKENS_PER_SECOND] * seconds == pytest.approx(tokens)


class EvaluatedRows(TrainerCallback):
    """The rows of each of a trainer's evaluations."""

    def __init__(self, trainer: training.Trainer) -> None:
        self.trainer, self.rows = trainer, []

    def on_evaluate(self, args, state, control, **kwargs):
        self.rows.append(len(self.trainer.eval_dataset))


def test_evaluations_during_training_read_a_fixed_subset_and_tokens_are_counted(
    tiny_llama: Path, llama_and_rows, tmp_path: Path
):
    _, rows = llama_and_rows
    peft_model, tokenizer = lora_on_tiny_llama(tiny_llama)
    cfg = TrainerConfig(
        num_train_epochs=1,
        learning_rate=1e-3,
        per_device_train_batch_size=4,
        eval_strategy="steps",
        eval_steps=1,
        eval_subset_rows=3,
        precision=Precision.fp32,
    )
    trainer = training.build_trainer(
        peft_model,
        tokenizer,
        training.training_arguments(cfg, tmp_path),
        rows.select(range(8)),
        rows.select(range(6)),
        eval_subset_rows=cfg.eval_subset_rows,
    )
    seen = EvaluatedRows(trainer)
    trainer.add_callback(seen)
    trainer.train()
    assert seen.rows == [3, 3]  # every step, the same first 3 held-out rows
    assert trainer.evaluate()[names.EVAL_LOSS] > 0 and seen.rows[-1] == 6  # after: all of them
    # The real (non-pad) tokens of the 8 rows trained, padding excluded.
    assert trainer.state.num_input_tokens_seen == data.real_tokens(rows.select(range(8)))
