"""Local data files (CSV, JSON, JSON Lines, Parquet) read into rows, every fault one line.

A file that is empty, binary or not UTF-8, a CSV with only a header, a JSON line that does not
parse, a text column holding numbers: each is a :class:`PeftlabError` naming the file and, where
the parser knows it, the line. CSV is read tolerantly (a space after the comma before a quoted
field is allowed); rows that still do not parse fail naming their line, or with
``dataset.on_bad_lines=skip`` are left out and counted.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from peftlab.errors import PeftlabError
from peftlab.schema import DatasetConfig


@dataclass
class Rows:
    table: pd.DataFrame
    skipped: int  # lines that did not parse, left out under dataset.on_bad_lines=skip


@dataclass(frozen=True)
class Source:
    key: str  # the config key naming the file: dataset.data_files or dataset.eval_data_files
    name: str  # the file as the config names it
    on_bad_lines: str


def read(cfg: DatasetConfig, key: str = "dataset.data_files", name: str | None = None) -> Rows:
    """The rows of the file the config ``key`` names (``name``: the file, for a key outside
    ``dataset``)."""
    name = name or getattr(cfg, key.removeprefix("dataset."))
    source = Source(key, name, cfg.on_bad_lines)
    path = Path(name).expanduser()
    if not path.is_file():
        raise PeftlabError(f"{key}={name!r}: no such file")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise PeftlabError(
            f"{key}={name!r}: unsupported file type {path.suffix!r}; allowed: {', '.join(READERS)}"
        )
    rows = reader(path, source)
    if rows.table.empty:
        raise PeftlabError(f"{_where(source)}: no rows (only a header, or nothing but blank lines)")
    return rows


def _where(source: Source, line: int | None = None) -> str:
    return f"{source.key}={source.name!r}" + (f" line {line}" if line else "")


def _text(path: Path, source: Source) -> str:
    """The file's text: an empty, binary or non-UTF-8 file is an error naming its line."""
    raw = path.read_bytes()
    if not raw.strip():
        raise PeftlabError(f"{_where(source)}: the file is empty")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise PeftlabError(f"{_where(source, line)}: a binary file, not text (a NUL byte)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise PeftlabError(
            f"{_where(source, line)}: not UTF-8 text (byte 0x{raw[error.start]:02x}); "
            "save the file as UTF-8"
        ) from None


def _read_csv(path: Path, source: Source) -> Rows:
    text = _text(path, source)
    bad: list[list[str]] = []

    def on_bad_line(fields: list[str]) -> None:
        if source.on_bad_lines == "error":
            raise PeftlabError(
                f"{_where(source, _line_of(text, fields))}: {len(fields)} fields where the header "
                "has fewer; quote fields that hold commas, or set dataset.on_bad_lines=skip"
            )
        bad.append(fields)

    try:
        # skipinitialspace: `a, "b, c"` is two fields, as a person reading it sees them.
        table = pd.read_csv(
            io.StringIO(text), skipinitialspace=True, engine="python", on_bad_lines=on_bad_line
        )
    except pd.errors.ParserError as error:  # e.g. an unclosed quote
        raise PeftlabError(f"{_where(source)}: {str(error).strip().splitlines()[-1]}") from None
    return Rows(table, skipped=len(bad))


def _line_of(text: str, fields: list[str]) -> int | None:
    """The line of the first record holding ``fields`` (pandas reports the fields only)."""
    records = csv.reader(io.StringIO(text), skipinitialspace=True)
    for record in records:
        if record == fields:
            return records.line_num
    return None


def _read_json(path: Path, source: Source) -> Rows:
    """A JSON array of objects, or one object per line (as Hugging Face datasets reads .json)."""
    text = _text(path, source)
    if not text.lstrip().startswith("["):
        return _records_per_line(text, source)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise PeftlabError(
            f"{_where(source, error.lineno)}: not valid JSON ({error.msg})"
        ) from None
    return Rows(pd.DataFrame.from_records(records), skipped=0)


def _read_jsonl(path: Path, source: Source) -> Rows:
    return _records_per_line(_text(path, source), source)


def _records_per_line(text: str, source: Source) -> Rows:
    records, skipped = [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if source.on_bad_lines == "error":
                raise PeftlabError(
                    f"{_where(source, number)}: not valid JSON ({error.msg}); fix the line, or set "
                    "dataset.on_bad_lines=skip"
                ) from None
            skipped += 1
    return Rows(pd.DataFrame.from_records(records), skipped=skipped)


def _read_parquet(path: Path, source: Source) -> Rows:
    try:
        return Rows(pd.read_parquet(path), skipped=0)
    except (OSError, ValueError) as error:  # pyarrow's errors for files that are not Parquet
        raise PeftlabError(f"{_where(source)}: not a Parquet file ({error})") from None


READERS: dict[str, Callable[[Path, Source], Rows]] = {
    ".csv": _read_csv,
    ".json": _read_json,
    ".jsonl": _read_jsonl,
    ".parquet": _read_parquet,
}
