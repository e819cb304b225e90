import shutil
from pathlib import Path

import pytest
import torch
from helpers.configs import compose_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from peftlab import modeling
from peftlab.config import ModelConfig
from peftlab.errors import PeftlabError
from peftlab.schema import to_settings


def test_eos_padding_tokenizer_pads_with_a_spare_special_token(tiny_llama: Path):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_llama)))
    tokenizer = loaded.tokenizer
    assert tokenizer.pad_token == "<s>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert loaded.model.config.pad_token_id == tokenizer.pad_token_id
    assert loaded.model.get_input_embeddings().num_embeddings == len(tokenizer)


def test_tokenizer_with_only_eos_gets_a_new_pad_token(tiny_llama: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama, bos_token=None)
    before = len(tokenizer)
    modeling.ensure_distinct_pad_token(model, tokenizer)
    assert tokenizer.pad_token == modeling.PAD_TOKEN and len(tokenizer) == before + 1
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id


def test_distinct_pad_token_is_kept(tiny_bloom: Path):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_bloom)))
    assert loaded.tokenizer.pad_token == "<pad>"
    assert loaded.path == str(tiny_bloom)
    assert not loaded.model.training


def test_missing_gguf_file_is_a_one_line_error(tmp_path: Path):
    cfg = ModelConfig(name_or_path=str(tmp_path), gguf_file="model.Q4.gguf")
    with pytest.raises(PeftlabError, match="model.gguf_file='model.Q4.gguf': no such file in"):
        modeling.load(cfg)


def gguf_config(path: Path) -> ModelConfig:
    return ModelConfig(name_or_path=str(path.parent), gguf_file=path.name)


@torch.no_grad()
def test_a_gguf_file_converts_once_to_a_plain_checkpoint_with_its_logits(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path / "cache"))  # empty: this test converts
    converted = modeling.converted_checkpoint(gguf_config(tiny_gguf))
    assert Path(converted).is_relative_to(tmp_path / "cache")
    weights = Path(converted, "model.safetensors")
    written = weights.stat().st_mtime_ns
    mark = Path(converted, "mark")  # a file of ours: gone if the folder is converted again
    mark.touch()
    assert modeling.converted_checkpoint(gguf_config(tiny_gguf)) == converted
    assert mark.is_file() and weights.stat().st_mtime_ns == written  # cached, not rewritten
    direct = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    plain = AutoModelForCausalLM.from_pretrained(converted)
    assert getattr(plain.config, "quantization_config", None) is None  # Trainer takes it
    ids = AutoTokenizer.from_pretrained(converted)("I want you to act as", return_tensors="pt")
    assert torch.equal(plain(**ids).logits, direct(**ids).logits)


def test_the_same_gguf_installed_elsewhere_reuses_the_conversion(tiny_gguf: Path, tmp_path: Path):
    converted = modeling.converted_checkpoint(gguf_config(tiny_gguf))
    cache = sorted(Path(converted).parent.iterdir())
    elsewhere = tmp_path / "other-venv" / tiny_gguf.name
    elsewhere.parent.mkdir()
    shutil.copy(tiny_gguf, elsewhere)  # another path, a new mtime, the same bytes
    assert modeling.converted_checkpoint(gguf_config(elsewhere)) == converted
    assert sorted(Path(converted).parent.iterdir()) == cache


def test_a_cached_conversion_cut_short_is_converted_again(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path / "cache"))
    converted = Path(modeling.converted_checkpoint(gguf_config(tiny_gguf)))
    weights = converted / "model.safetensors"
    whole = weights.read_bytes()
    with weights.open("r+b") as file:  # a disk that filled up, a copy that stopped halfway
        file.truncate(len(whole) // 2)
    mark = converted / "mark"  # a file of ours: gone if the folder is converted again
    mark.touch()
    assert modeling.converted_checkpoint(gguf_config(tiny_gguf)) == str(converted)
    assert not mark.exists()  # converted again, not the cut file mended or kept
    assert weights.read_bytes() == whole  # the same conversion, whole
    assert modeling.load(gguf_config(tiny_gguf)).model.config.hidden_size == 32


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_model_dtype_is_the_base_weights_dtype(dtype, tiny_llama: Path):
    unused = ["tracking.uri=sqlite:///unused", "tracking.artifact_location=/unused",
              "output_dir=/unused"]  # fmt: skip
    settings = to_settings(compose_config([f"model.dtype={dtype}", *unused]))
    settings.model.name_or_path, settings.model.gguf_file = str(tiny_llama), None
    loaded = modeling.load(settings.model)
    on_disk = AutoModelForCausalLM.from_pretrained(tiny_llama).dtype
    assert on_disk == torch.float32  # saved in float32: bfloat16 is the loading's doing
    assert {p.dtype for p in loaded.model.parameters()} == {getattr(torch, dtype)}


def test_conversions_are_cached_under_the_homes_cache_without_peftlab_cache(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("PEFTLAB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    converted = Path(modeling.converted_checkpoint(gguf_config(tiny_gguf)))
    assert converted.parent == tmp_path / ".cache" / "peftlab" / "converted"
    assert (converted / "model.safetensors").is_file()
