"""``dataset.format=completion``: a prompt filled from a row's columns, and the completion the
model should write for it (``dataset.prompt_template``, ``dataset.completion_column``).

A template field holding a list (a quote's tags) is filled with its items joined by ", ".
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Formatter

from peftlab.config import setting
from peftlab.errors import PeftlabError
from peftlab.formats.base import BadRow, DataFormat, Example, Segment, is_empty, register, text_of


@dataclass(unsafe_hash=True)
class CompletionKeys:
    prompt_template: str | None = setting(
        None, 'format=completion: the prompt, columns in braces: "Role: {act}\\nPrompt:"'
    )
    completion_column: str = setting("completion", "format=completion: the answer's column")


@register
class Completion(DataFormat):
    name = "completion"
    has_prompt = True
    keys = CompletionKeys

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.fields = template_fields(cfg.prompt_template)

    def columns(self) -> list[tuple[str, str]]:
        fields = [("dataset.prompt_template", field) for field in self.fields]
        return [*fields, ("dataset.completion_column", self.cfg.completion_column)]

    def example(self, row) -> Example | None:
        column = self.cfg.completion_column
        if is_empty(row[column]):
            raise BadRow(f"dataset.completion_column={column!r} is empty")
        reference = text_of(row[column], "dataset.completion_column", column)
        return Example({field: row[field] for field in self.fields}, reference)

    def prompt(self, example, tokenizer=None) -> str:
        values = {key: fill(value) for key, value in example.fields.items()}
        return self.cfg.prompt_template.format(**values)

    def inputs(self) -> list[str]:
        return self.fields

    def prompt_from(self, values, tokenizer=None) -> str:
        self.require_inputs(values)
        return self.cfg.prompt_template.format(**values)

    def segments(self, example, tokenizer) -> list[Segment]:
        return [Segment(self.prompt(example), False), Segment(example.reference, True)]


def template_fields(template: str | None) -> list[str]:
    """The columns a template names, in order; a template Python cannot format is one line."""
    if not template:
        raise PeftlabError(
            "dataset.prompt_template is not set: dataset.format=completion fills it from each "
            'row\'s columns, e.g. dataset.prompt_template="Role: {act}\\nPrompt:"'
        )
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as error:  # an unbalanced brace
        raise PeftlabError(
            f"dataset.prompt_template={template!r} is not a template: {error}; write a literal "
            "brace as {{ or }}"
        ) from None
    fields = list(dict.fromkeys(name for _, name, _, _ in parsed if name is not None))
    for name in fields:
        if not name.isidentifier():
            raise PeftlabError(
                f"dataset.prompt_template={template!r}: field {{{name}}} is not a column name; "
                "write {column}, and a literal brace as {{ or }}"
            )
    return fields


def fill(value) -> str:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        return ", ".join(str(item) for item in value)
    return "" if is_empty(value) else str(value)
