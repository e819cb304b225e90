from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from peftlab import modeling
from peftlab.config import ModelConfig
from peftlab.errors import PeftlabError


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
