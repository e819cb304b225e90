"""Data files the tests write: chats for the chat format, CSV rows (one of them bad)."""

from __future__ import annotations

import json
from pathlib import Path

CHATS = [
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": f"Act as {role}."},
        {"role": "assistant", "content": f"I want you to act as a {role}."},
        {"role": "user", "content": "Again, please."},
        {"role": "assistant", "content": f"Act as a {role}, then."},
    ]
    for role in ("poet", "chef", "coach", "translator", "historian", "storyteller", "gardener",
                 "proofreader", "philosopher", "songwriter", "dietitian", "tour guide")
]  # fmt: skip


def write_chats(folder: Path) -> Path:
    path = folder / "chats.jsonl"
    path.write_text("".join(json.dumps({"messages": chat}) + "\n" for chat in CHATS))
    return path


def rows_csv(path: Path, bad_line: bool) -> Path:
    lines = ["text,id", *(f'"example number {i}, with a comma",{i}' for i in range(30))]
    if bad_line:
        lines.insert(5, "an unquoted, comma,99")  # three fields under a two-field header
    path.write_text("\n".join(lines) + "\n")
    return path
