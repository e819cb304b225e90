"""Tuned adapters in use, attached to one shared base model.

As in the notebook, adapters are loaded onto a single copy of the base model and picked with
``set_adapter``: N adapters of one method cost one base model plus N adapters. One PeftModel
cannot hold adapters of different methods, so the bank keeps the adapters of one method
attached at a time and swaps them (unloading injected layers) when another method is asked for;
adapters of a method peft holds one at a time (trainable tokens) take turns the same way.
Where the adapters come from: :mod:`peftlab.adapter_sources`.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext

import torch
from peft import PeftModel

from peftlab import generation, modeling
from peftlab.adapter_sources import AdapterSource
from peftlab.config import GenerationSettings, ModelConfig
from peftlab.errors import PeftlabError
from peftlab.methods import of_peft_type

log = logging.getLogger(__name__)


class AdapterBank:
    """One base model with any number of adapters of that base, of any methods, by name."""

    def __init__(self, model: ModelConfig, base: str) -> None:
        self.base = base
        self.loaded = modeling.load(model)
        self.sources: dict[str, AdapterSource] = {}
        self.peft_model: PeftModel | None = None  # the attached adapters, all of one method

    @classmethod
    def for_sources(cls, sources: list[AdapterSource]) -> AdapterBank:
        bases = {source.base for source in sources}
        if len(bases) > 1:
            listing = "; ".join(f"{s.label} -> {s.base}" for s in sources)
            raise PeftlabError(f"--run: adapters of different base models in one call: {listing}")
        bank = cls(sources[0].model, sources[0].base)
        for source in sources:
            bank.add(source)
        return bank

    def add(self, source: AdapterSource) -> None:
        """Make ``source`` available to :meth:`generate`, checked against the base model."""
        if source.name in self.sources:
            return
        if source.base != self.base:
            raise PeftlabError(
                f"--run {source.label!r}: trained on {source.base}, not on {self.base}"
            )
        self.sources[source.name] = source
        self._activate(source)

    def _activate(self, source: AdapterSource) -> PeftModel:
        """Attach ``source`` (swapping out adapters of another method, or of its own where peft
        holds one at a time) and make it active."""
        if self.peft_model is not None and not self._holds_beside(source):
            self._detach_all()
        if self.peft_model is None or source.name not in self.peft_model.peft_config:
            self._load(source)
        self.peft_model.set_adapter(source.name)
        return self.peft_model.eval()

    def _load(self, source: AdapterSource) -> None:
        """Load ``source`` and run one token through it: an adapter of another width fails
        here, in one line, not in the middle of a generation."""
        try:
            if self.peft_model is None:
                self.peft_model = PeftModel.from_pretrained(
                    self.loaded.model, source.adapter_dir, adapter_name=source.name
                )
            else:
                self.peft_model.load_adapter(source.adapter_dir, adapter_name=source.name)
            self.peft_model.set_adapter(source.name)
            token = torch.tensor(
                [[self.loaded.tokenizer.eos_token_id]], device=self.loaded.model.device
            )
            with torch.no_grad():
                self.peft_model(input_ids=token)
        except RuntimeError as error:  # torch's shape mismatch
            del self.sources[source.name]
            self._detach_all()
            raise PeftlabError(
                f"--run {source.label!r}: the adapter does not fit the base model {self.base}: "
                f"{str(error).strip().splitlines()[-1]}"
            ) from error

    def _holds_beside(self, source: AdapterSource) -> bool:
        """Whether ``source`` can join (or is among) the attached adapters."""
        if self._attached_type() != source.peft_type:
            return False
        if of_peft_type(source.peft_type).shares_a_base:
            return True
        if source.name not in self.peft_model.peft_config:
            log.info("%s adapters take turns on the base model: peft holds one at a time",
                     of_peft_type(source.peft_type).option())  # fmt: skip
            return False
        return True

    def _attached_type(self) -> str:
        return self.peft_model.active_peft_config.peft_type.value

    def _detach_all(self) -> None:
        """Leave the base model as loaded: injected layers are unloaded, not merged."""
        if self.peft_model is not None:
            of_peft_type(self._attached_type()).detach(self.peft_model)
        self.peft_model = None

    def generate(self, prompt: str, settings: GenerationSettings, name: str | None = None) -> str:
        """Output of the adapter ``name``, or of the untuned base model when ``name`` is None."""
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        if name is None:
            with self._base_only():
                return generation.generate(model, tokenizer, prompt, settings)
        peft_model = self._activate(self.sources[name])
        return generation.generate(
            model, tokenizer, prompt, settings, generation.prefix(peft_model)
        )

    def _base_only(self) -> AbstractContextManager:
        """Injected layers switched off; prompt-learning adapters never touch the base."""
        if self.peft_model is None or self.peft_model.active_peft_config.is_prompt_learning:
            return nullcontext()
        return self.peft_model.disable_adapter()
