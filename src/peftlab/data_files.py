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

from peftlab.config import DatasetConfig
from peftlab.errors import PeftlabError


@dataclass
class Rows:
    table: pd.DataFrame
    skipped: int  # lines that did not parse, left out under dataset.on_bad_lines=skip


def read(cfg: DatasetConfig) -> Rows:
    path = Path(cfg.data_files).expanduser()
    if not path.is_file():
        raise PeftlabError(f"dataset.data_files={cfg.data_files!r}: no such file")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise PeftlabError(
            f"dataset.data_files={cfg.data_files!r}: unsupported file type {path.suffix!r}; "
            f"allowed: {', '.join(READERS)}"
        )
    rows = reader(path, cfg)
    if rows.table.empty:
        raise PeftlabError(f"{_where(cfg)}: no rows (only a header, or nothing but blank lines)")
    return rows


def _where(cfg: DatasetConfig, line: int | None = None) -> str:
    return f"dataset.data_files={cfg.data_files!r}" + (f" line {line}" if line else "")


def _text(path: Path, cfg: DatasetConfig) -> str:
    """The file's text: an empty, binary or non-UTF-8 file is an error naming its line."""
    raw = path.read_bytes()
    if not raw.strip():
        raise PeftlabError(f"{_where(cfg)}: the file is empty")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise PeftlabError(f"{_where(cfg, line)}: a binary file, not text (a NUL byte)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise PeftlabError(
            f"{_where(cfg, line)}: not UTF-8 text (byte 0x{raw[error.start]:02x}); "
            "save the file as UTF-8"
        ) from None


def _read_csv(path: Path, cfg: DatasetConfig) -> Rows:
    text = _text(path, cfg)
    bad: list[list[str]] = []

    def on_bad_line(fields: list[str]) -> None:
        if cfg.on_bad_lines == "error":
            raise PeftlabError(
                f"{_where(cfg, _line_of(text, fields))}: {len(fields)} fields where the header "
                "has fewer; quote fields that hold commas, or set dataset.on_bad_lines=skip"
            )
        bad.append(fields)

    try:
        # skipinitialspace: `a, "b, c"` is two fields, as a person reading it sees them.
        table = pd.read_csv(
            io.StringIO(text), skipinitialspace=True, engine="python", on_bad_lines=on_bad_line
        )
    except pd.errors.ParserError as error:  # e.g. an unclosed quote
        raise PeftlabError(f"{_where(cfg)}: {str(error).strip().splitlines()[-1]}") from None
    return Rows(table, skipped=len(bad))


def _line_of(text: str, fields: list[str]) -> int | None:
    """The line of the first record holding ``fields`` (pandas reports the fields only)."""
    records = csv.reader(io.StringIO(text), skipinitialspace=True)
    for record in records:
        if record == fields:
            return records.line_num
    return None


def _read_json(path: Path, cfg: DatasetConfig) -> Rows:
    """A JSON array of objects, or one object per line (as Hugging Face datasets reads .json)."""
    text = _text(path, cfg)
    if not text.lstrip().startswith("["):
        return _records_per_line(text, cfg)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise PeftlabError(f"{_where(cfg, error.lineno)}: not valid JSON ({error.msg})") from None
    return Rows(pd.DataFrame.from_records(records), skipped=0)


def _read_jsonl(path: Path, cfg: DatasetConfig) -> Rows:
    return _records_per_line(_text(path, cfg), cfg)


def _records_per_line(text: str, cfg: DatasetConfig) -> Rows:
    records, skipped = [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if cfg.on_bad_lines == "error":
                raise PeftlabError(
                    f"{_where(cfg, number)}: not valid JSON ({error.msg}); fix the line, or set "
                    "dataset.on_bad_lines=skip"
                ) from None
            skipped += 1
    return Rows(pd.DataFrame.from_records(records), skipped=skipped)


def _read_parquet(path: Path, cfg: DatasetConfig) -> Rows:
    try:
        return Rows(pd.read_parquet(path), skipped=0)
    except (OSError, ValueError) as error:  # pyarrow's errors for files that are not Parquet
        raise PeftlabError(f"{_where(cfg)}: not a Parquet file ({error})") from None


READERS: dict[str, Callable[[Path, DatasetConfig], Rows]] = {
    ".csv": _read_csv,
    ".json": _read_json,
    ".jsonl": _read_jsonl,
    ".parquet": _read_parquet,
}
