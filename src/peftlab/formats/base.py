"""What every data format tells the rest of peftlab: the columns it reads, the example a row
becomes, the text segments the model reads and writes, and the prompt it generates from.

A format is one subclass of :class:`DataFormat` in a module of this package, registered with
:func:`register`. It holds the dataset config and nothing else, imports nothing heavy, and is
asked before any model loads whether a file suits it (``columns``, ``example``), so that data
faults are one line within seconds. The tokenizer comes in only to render examples. Nothing
outside this package tests a format's name: code asks it what it can do (``has_prompt``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from peftlab.errors import PeftlabError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from peftlab.config import DatasetBase

REGISTRY: dict[str, type[DataFormat]] = {}
TRAIN_ON = ("completion", "all")


def register(cls: type[DataFormat]) -> type[DataFormat]:
    """Class decorator: makes a format available as ``dataset.format=<cls.name>``."""
    REGISTRY[cls.name] = cls
    return cls


class BadRow(ValueError):
    """A row this format cannot use; the message names the key and the value found."""


@dataclass(frozen=True)
class Example:
    fields: Mapping[str, Any]  # the row's columns this format reads, by their names in the file
    reference: str  # what the model should write: the completion (the whole text, for text)


@dataclass(frozen=True)
class Segment:
    text: str
    answer: bool  # written by the model: its tokens are trained under train_on=completion


class DataFormat(ABC):
    name: ClassVar[str]
    # The format's own ``dataset.*`` keys: a dataclass of settings (peftlab.config.setting),
    # merged with the keys every format shares into the dataset schema (peftlab.schema).
    keys: ClassVar[type]
    # Whether examples have a prompt to generate from: held-out generations are then scored,
    # and the loss can be limited to the answer (``dataset.train_on=completion``, the default).
    has_prompt: ClassVar[bool]

    def __init__(self, cfg: DatasetBase) -> None:
        self.cfg = cfg  # the whole dataset config: the shared keys and every format's

    @property
    def train_on(self) -> str:
        return self.cfg.train_on or ("completion" if self.has_prompt else "all")

    @abstractmethod
    def columns(self) -> list[tuple[str, str]]:
        """The columns read, each with the config key that names it."""

    @abstractmethod
    def example(self, row: Mapping[str, Any]) -> Example | None:
        """The row as an example; None for a row with nothing in it (left out silently).

        Raises :class:`BadRow` for a row that holds something this format cannot use.
        """

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:  # noqa: B027
        """Raise PeftlabError if this tokenizer cannot render the examples (most can)."""

    @abstractmethod
    def segments(self, example: Example, tokenizer: PreTrainedTokenizerBase) -> list[Segment]:
        """The example as the text the model reads, in order; answers marked."""

    def prompt(self, example: Example, tokenizer: PreTrainedTokenizerBase) -> str:
        """The text a tuned model continues with the example's answer (formats with
        ``has_prompt``; callers ask that first)."""
        raise PeftlabError(f"dataset.format={self.name}: its rows have no prompt")

    def inputs(self) -> list[str]:
        """What a person gives a tuned model of this format to get an answer (``peftlab
        generate --input NAME=VALUE``, the demo, the logged model's columns); none for text."""
        return []

    def prompt_from(self, values: Mapping[str, str], tokenizer: PreTrainedTokenizerBase) -> str:
        """The prompt made of a person's ``inputs()`` values, as the run made its prompts."""
        raise PeftlabError(f"dataset.format={self.name}: the run takes a plain prompt, no inputs")

    def require_inputs(self, values: Mapping[str, str]) -> None:
        if set(values) != set(self.inputs()):
            raise PeftlabError(
                f"inputs {', '.join(sorted(values)) or 'none'} given; the run's "
                f"dataset.format={self.name} takes {', '.join(self.inputs())} "
                f"(as NAME=VALUE)"
            )


def is_empty(value: Any) -> bool:
    """A missing cell: None, NaN (pandas' empty CSV field), or blank text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and not value.strip()


def text_of(value: Any, key: str, column: str) -> str:
    if not isinstance(value, str):
        raise BadRow(f"{key}={column!r} holds {value!r} ({type(value).__name__}), not text")
    return value
