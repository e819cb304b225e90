"""MkDocs hook: a line ``<!-- keys: GROUP -->`` in a page becomes the table of that config
group's keys (``peftlab.reference``), so each key's help is written once, in its schema, and
shown here. Only a marker alone on its line counts: one quoted in the text stays as it is."""

import re

from mkdocs.exceptions import PluginError

from peftlab import reference
from peftlab.schema import groups as config_groups

MARKER = re.compile(r"^<!-- keys: (\S+) -->$", re.MULTILINE)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    groups = config_groups()

    def table(match: re.Match) -> str:
        group = match.group(1)
        if group not in groups:
            known = ", ".join(groups)
            raise PluginError(f"{page.file.src_path}: no config group {group!r} (one of {known})")
        return reference.markdown_table(reference.group_keys(group, groups[group]))

    return MARKER.sub(table, markdown)
