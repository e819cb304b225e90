"""``dataset.format=text``: one text column, learnt whole (plain language modelling)."""

from __future__ import annotations

from dataclasses import dataclass

from peftlab.config import setting
from peftlab.formats.base import DataFormat, Example, Segment, is_empty, register, text_of


@dataclass(unsafe_hash=True)
class TextKeys:
    text_column: str = setting("text", "format=text: the column of text to learn")


@register
class Text(DataFormat):
    name = "text"
    has_prompt = False
    keys = TextKeys

    def columns(self) -> list[tuple[str, str]]:
        return [("dataset.text_column", self.cfg.text_column)]

    def example(self, row) -> Example | None:
        column = self.cfg.text_column
        value = row[column]
        if is_empty(value):
            return None
        return Example({column: value}, text_of(value, "dataset.text_column", column))

    def segments(self, example, tokenizer) -> list[Segment]:
        return [Segment(example.reference, answer=True)]
