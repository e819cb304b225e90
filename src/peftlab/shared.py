"""What the jobs of one process share: the frozen base model they tune, and what the untuned
model measured. One object, made where a process starts its jobs (``train.py``) and passed down
to each run; a test makes its own, so nothing is left over from another test.

Light to import: the model loads (torch, transformers) only when a run asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from peftlab.config import ModelConfig
    from peftlab.modeling import LoadedModel

T = TypeVar("T")


@dataclass
class Shared:
    """Each job's PEFT method leaves the base model as it found it (``PeftMethod.attached``), so
    the jobs of a sweep over PEFT or trainer knobs load it once and measure it untuned once."""

    loaded: tuple[ModelConfig, LoadedModel] | None = None
    measurements: dict[Hashable, Any] = field(default_factory=dict)

    def model(self, cfg: ModelConfig) -> LoadedModel:
        """The base model of ``cfg``, loaded on first use. One model is held at a time: a job of
        another model frees this one before loading its own."""
        if self.loaded is None or self.loaded[0] != cfg:
            from peftlab import modeling

            self.loaded = None
            self.loaded = (cfg, modeling.load(cfg))
        return self.loaded[1]

    def measured(self, key: Hashable, measure: Callable[[], T]) -> T:
        """``measure()``'s result, computed once for each key (the settings it depends on)."""
        if key not in self.measurements:
            self.measurements[key] = measure()
        return self.measurements[key]
