"""The config keys as a reference: each key's dotted name, type, default and help.

A key's help is written once, where the key is defined: ``field(metadata={"help": ...})`` in
its schema. Everything here reads the schemas' dataclass fields, so the docs' key tables (the
MkDocs hook ``docs/hooks/keys.py``) and ``train.py --help`` (Hydra's ``hydra/help`` config,
registered by :func:`register_help`) show the same words; :func:`peftlab.schema.groups` lists
the schemas and stay in step with the code.
"""

from __future__ import annotations

import dataclasses
import html
import json
import textwrap
import typing
from collections.abc import Iterable, Iterator
from enum import Enum
from typing import Any, NamedTuple

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

# train.py --help: a key's help wrapped below it, lines as long as the code's.
HELP_LINES = textwrap.TextWrapper(
    width=100, initial_indent=" " * 6, subsequent_indent=" " * 6, break_on_hyphens=False
)


class Key(NamedTuple):
    """One config key as the reference shows it."""

    name: str  # dotted, as typed on the command line: peft.r
    type: str
    default: str
    help: str


def keys(schema: type, prefix: str) -> Iterator[Key]:
    """The keys of a dataclass schema under ``prefix``, in the order the schema defines them."""
    types = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        yield Key(
            f"{prefix}.{field.name}",
            type_text(types[field.name]),
            default_text(field),
            field.metadata.get("help", ""),
        )


def group_keys(group: str, schema: type) -> list[Key]:
    """The keys of a group (``peft.lora``'s are ``peft.r``, ...), from its schema."""
    return list(keys(schema, prefix=group.split(".")[0]))


def type_text(hint: Any) -> str:
    """A key's type as its values are typed: an enum's choices, null rather than None."""
    if isinstance(hint, type) and issubclass(hint, Enum):
        return ", ".join(member.value for member in hint)
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace(" | None", " or null")


def default_text(field: dataclasses.Field) -> str:
    """A key's default as it would be typed (JSON, which YAML and Hydra's overrides read)."""
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        value = field.default
    # MISSING, Hydra's "???": the group's option sets it (model.name_or_path).
    if value is dataclasses.MISSING or (isinstance(value, str) and value == MISSING):
        return "required"
    if isinstance(value, Enum):
        value = value.value
    return json.dumps(value, ensure_ascii=False)


def markdown_table(rows: Iterable[Key]) -> str:
    """Keys as a Markdown table: key, type, default, help."""
    lines = ["| key | type | default | help |", "|---|---|---|---|"]
    for key in rows:
        cells = (_code(key.name), _text(key.type), _code(key.default), _text(key.help))
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def _code(text: str) -> str:
    # Python-Markdown's tables keep a "|" in code (an escaped one would show its backslash).
    return f"`{text}`"


def _text(text: str) -> str:
    # Help is plain text: a "<method>" in it is not an HTML tag, and a "|" does not end the cell.
    return html.escape(text, quote=False).replace("|", "\\|")


def plain_text(rows: Iterable[Key]) -> str:
    """Keys for a terminal: each key with its type and default, its help wrapped below."""
    lines = []
    for key in rows:
        lines.append(f"  {key.name}: {key.type} = {key.default}")
        lines += HELP_LINES.wrap(key.help)
    return "\n".join(lines)


HEADER = """\
peftlab: tune a causal language model with a PEFT method, tracked in MLflow.
Usage: train.py [-m] [GROUP=OPTION ...] [KEY=VALUE ...]   (-m: a sweep, a job per combination)
"""

FOOTER = """\
The composed config: --cfg job. Hydra's own help: --hydra-help.
The reference, with every key: docs/configuration.md, or `make docs` and open site/index.html.
"""

# Hydra's help template. The keys' listing comes from a resolver, when --help shows it: as text
# in the template, its ~40 KB would be parsed for interpolations at every compose of the config.
TEMPLATE = """\
${hydra.help.header}
== Config groups: pick one option of each (GROUP=OPTION) ==

$APP_CONFIG_GROUPS

== Keys: set any (KEY=VALUE); the peft.* keys are those of the method picked ==

${peftlab.help_keys:}

== Flags ==

$FLAGS_HELP

${hydra.help.footer}"""


def help_keys(groups: dict[str, type]) -> str:
    """Every group's keys, as they stand in the help template to come out unchanged: OmegaConf
    does not resolve a resolver's output again, but Hydra's string.Template then substitutes
    ``$NAME`` in it (``$$`` is a ``$``)."""
    blocks = (f"{name}\n{plain_text(group_keys(name, schema))}" for name, schema in groups.items())
    return "\n\n".join(blocks).replace("$", "$$")


def register_help(groups: dict[str, type]) -> None:
    """``train.py --help``: the ``hydra/help`` option ``peftlab`` that conf/train.yaml picks,
    listing the keys of ``groups`` (each group's schema by name) through the resolver
    ``peftlab.help_keys``."""
    OmegaConf.register_new_resolver("peftlab.help_keys", lambda: help_keys(groups), replace=True)
    node = {"app_name": "train.py", "header": HEADER, "footer": FOOTER, "template": TEMPLATE}
    ConfigStore.instance().store(group="hydra/help", name="peftlab", node=node)
