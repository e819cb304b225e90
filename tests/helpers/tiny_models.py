"""Tiny models built on the fly: random 2-layer BLOOM and Llama (one with a chat template), a
tiny GGUF, all on one byte-level BPE tokenizer trained on the sample data (session fixtures)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import gguf
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BloomConfig,
    BloomForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from peftlab.config import SAMPLES_DIR


def sample_texts() -> list[str]:
    with open(SAMPLES_DIR / "prompts.csv", newline="") as f:
        prompts = [row["prompt"] for row in csv.DictReader(f)]
    with open(SAMPLES_DIR / "quotes.jsonl") as f:
        quotes = [json.loads(line)["quote"] for line in f]
    return prompts + quotes


@pytest.fixture(scope="session")
def bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(sample_texts(), trainer)
    return tokenizer


def saved_random(model_class, config, tokenizer, path: Path) -> Path:
    """A randomly initialised model and its tokenizer saved in ``path``; the same random weights
    on every run (seeded), so tests stay deterministic."""
    torch.manual_seed(0)
    model_class(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bloom(bpe: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BLOOM whose tokenizer already has a pad token distinct from EOS."""
    path = tmp_path_factory.mktemp("tiny-bloom")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    config = BloomConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        n_layer=2,
        n_head=4,
        initializer_range=0.5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return saved_random(BloomForCausalLM, config, tokenizer, path)


@pytest.fixture(scope="session")
def tiny_llama(bpe: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama whose tokenizer pads with EOS and has no unk (as SmolLM2-like)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return saved_random(LlamaForCausalLM, config, tokenizer, path)


# ChatML, as SmolLM2-Instruct's template renders a conversation (without its default system).
CHATML = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_gguf(bpe: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama as a GGUF file (fp32, tied embeddings, a byte-level BPE
    tokenizer), laid out as SmolLM2's: what the conversion cache needs, in kilobytes."""
    path = tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama.F32.gguf"
    hidden, layers, heads, kv_heads, ffn = 32, 2, 4, 2, 64
    model = json.loads(bpe.to_str())["model"]
    tokens = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges([" ".join(pair) for pair in model["merges"]])
    special = {"<unk>", "<s>", "</s>", "<pad>"}
    writer.add_token_types([
        gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL for token in tokens
    ])  # fmt: skip
    writer.add_unk_token_id(tokens.index("<unk>"))
    writer.add_bos_token_id(tokens.index("<s>"))
    writer.add_eos_token_id(tokens.index("</s>"))
    writer.add_pad_token_id(tokens.index("<pad>"))
    generator = torch.Generator().manual_seed(0)
    head = hidden // heads
    shapes = {"token_embd.weight": (len(tokens), hidden), "output_norm.weight": (hidden,)}
    for i in range(layers):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (hidden,), f"blk.{i}.ffn_norm.weight": (hidden,),
            f"blk.{i}.attn_q.weight": (hidden, hidden),
            f"blk.{i}.attn_k.weight": (kv_heads * head, hidden),
            f"blk.{i}.attn_v.weight": (kv_heads * head, hidden),
            f"blk.{i}.attn_output.weight": (hidden, hidden),
            f"blk.{i}.ffn_gate.weight": (ffn, hidden), f"blk.{i}.ffn_up.weight": (ffn, hidden),
            f"blk.{i}.ffn_down.weight": (hidden, ffn),
        }  # fmt: skip
    for name, shape in shapes.items():
        weights = torch.randn(shape, generator=generator) * 0.5
        writer.add_tensor(name, (weights.abs() + 0.5 if len(shape) == 1 else weights).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_chat_llama(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a chat template in its tokenizer."""
    path = tmp_path_factory.mktemp("tiny-chat-llama")
    shutil.copytree(tiny_llama, path, dirs_exist_ok=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(path)
    return path


@torch.no_grad()
def randomize_adapter(peft_model) -> None:
    """Random trainable weights (a fresh LoRA is a no-op: this makes it matter), eval mode."""
    for param in peft_model.parameters():
        if param.requires_grad:
            param.normal_(0, 1)
    peft_model.eval()
