"""MkDocs hook: a line ``<!-- keys: GROUP -->`` in a page becomes the table of that config
group's keys (``peftlab.reference``), so each key's help is written once, in its schema, and
shown here; a line ``<!-- methods -->`` becomes a section per PEFT method (its module's
docstring, its learning rate, its keys). Only a marker alone on its line counts: one quoted in
the text stays as it is."""

import re
import sys

from mkdocs.exceptions import PluginError

from peftlab import reference
from peftlab.methods import REGISTRY
from peftlab.schema import groups as config_groups

MARKER = re.compile(r"^<!-- keys: (\S+) -->$", re.MULTILINE)
METHODS_MARKER = re.compile(r"^<!-- methods -->$", re.MULTILINE)


def method_section(method) -> str:
    about = " ".join(sys.modules[method.__module__].__doc__.split())
    keys = reference.group_keys("peft", method)
    return (
        f"### `peft={method.option()}`\n\n{about} Learning rate: {method.learning_rate:g}.\n\n"
        f"{reference.markdown_table(keys)}\n"
    )


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    groups = config_groups()

    def table(match: re.Match) -> str:
        group = match.group(1)
        if group not in groups:
            known = ", ".join(groups)
            raise PluginError(f"{page.file.src_path}: no config group {group!r} (one of {known})")
        return reference.markdown_table(reference.group_keys(group, groups[group]))

    methods = sorted(REGISTRY.values(), key=lambda method: method.option())
    sections = "\n".join(method_section(method) for method in methods)
    return METHODS_MARKER.sub(lambda _: sections, MARKER.sub(table, markdown))
