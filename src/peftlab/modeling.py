"""Load the frozen base model and its tokenizer, from the Hub, a local directory or a GGUF file."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from peftlab import hub
from peftlab.cache import cache_dir
from peftlab.config import ModelConfig
from peftlab.errors import PeftlabError

log = logging.getLogger(__name__)

PAD_TOKEN = "<|pad|>"


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: str  # local directory or Hub id that from_pretrained loaded; also the tokenizer's


def load(cfg: ModelConfig) -> LoadedModel:
    """The frozen base model and its tokenizer, a copy of the caller's own."""
    path = converted_checkpoint(cfg) if cfg.gguf_file else hub_or_local(cfg)
    kwargs = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, cfg.dtype.value), **kwargs
    )
    ensure_distinct_pad_token(model, tokenizer)
    model.requires_grad_(False).eval().to(device())
    return LoadedModel(model=model, tokenizer=tokenizer, path=path)


def device() -> torch.device:
    """Where models run: the GPU where there is one (the Trainer trains there too), so that
    generating from a loaded adapter computes what the run computed."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def hub_or_local(cfg: ModelConfig) -> str:
    return hub.resolve(
        cfg.name_or_path,
        key="model.name_or_path",
        repo_type="model",
        revision=cfg.revision,
        offline_alternative="model=smollm2-135m",
    )


def ensure_distinct_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token other than EOS.

    DataCollatorForLanguageModeling masks every pad id out of the labels; with pad == EOS the
    model never learns to end a text, and tuned generations run on to max_new_tokens. An existing
    special token is preferred: a new one would resize the frozen embeddings.
    """
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != eos:
        return
    spare = [t for t in (tokenizer.unk_token, tokenizer.bos_token) if t is not None]
    spare = [t for t in spare if tokenizer.convert_tokens_to_ids(t) != eos]
    if spare:
        tokenizer.pad_token = spare[0]
    else:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


COMPLETE = "complete.json"  # the sizes of a finished conversion's files


def converted_checkpoint(cfg: ModelConfig) -> str:
    """A plain (de-quantized) checkpoint of a GGUF file, converted once and cached.

    Trainer refuses models that carry a quantizer; dropping the GGUF quantization config after
    loading leaves ordinary fp32 weights with identical logits.
    """
    gguf = Path(cfg.name_or_path, cfg.gguf_file)
    if not gguf.is_file():
        raise PeftlabError(
            f"model.gguf_file={cfg.gguf_file!r}: no such file in {cfg.name_or_path} "
            "(model.name_or_path); point both at an existing GGUF file"
        )
    target = cache_dir() / "converted" / f"{gguf.stem}-{_file_digest(gguf)}"
    damage = _damage(target)
    if damage is None:
        return str(target)
    if target.exists():
        log.warning("The cached conversion in %s is damaged (%s): converting again", target, damage)
        shutil.rmtree(target)
    log.info("Converting %s to a plain checkpoint (once; cached in %s)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    try:
        with _progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        sizes = {f.name: f.stat().st_size for f in staging.iterdir()}
        (staging / COMPLETE).write_text(json.dumps(sizes, indent=1))
        # Rename last, so an interrupted conversion never looks like a finished one.
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def _damage(converted: Path) -> str | None:
    """What is wrong with a cached conversion (missing, cut short, a file gone), or None: its
    files must have the sizes recorded when it was written."""
    try:
        sizes = json.loads((converted / COMPLETE).read_text())
    except (OSError, ValueError):
        return f"no readable {COMPLETE}"
    for name, size in sizes.items():
        path = converted / name
        if not path.is_file() or path.stat().st_size != size:
            found = path.stat().st_size if path.is_file() else "no"
            return f"{name} has {found} bytes of {size}"
    return None


def _file_digest(path: Path) -> str:
    """Content digest: every install of the same GGUF file (one per venv) shares a conversion."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()[:12]


@contextmanager
def _progress_bars() -> Iterator[None]:
    """Show transformers' progress bars for a long step while they are off elsewhere."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        yield
    finally:
        if not was_enabled:
            hf_logging.disable_progress_bar()
