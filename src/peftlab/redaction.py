"""Passwords in URIs (``postgresql://user:secret@host/db``) never reach a log, a run or a file
peftlab writes: every such text passes through :func:`redact` first."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback

if TYPE_CHECKING:
    from hydra.core.utils import JobReturn
    from omegaconf import DictConfig

# scheme://user:password@host: the password runs from the ':' after the user name to the last
# '@' of the URI (a password may hold an unescaped '@'). Hydra prints overrides with each ':'
# escaped as '\:'.
_CREDENTIALS = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*\\?://[^:/@\s\\]*\\?:)[^\s]*@(?P<host>[^@\s]*)"
)
MASK = "***"


def redact(text: str) -> str:
    """``text`` with every URI's password replaced by ``***``."""
    return _CREDENTIALS.sub(lambda m: f"{m['head']}{MASK}@{m['host']}", text)


def redact_values(values: dict[str, Any]) -> dict[str, Any]:
    """A mapping whose string values are redacted (params, tags)."""
    return {key: redact(v) if isinstance(v, str) else v for key, v in values.items()}


class RedactedStream:
    """A text stream whose writes have URIs' passwords masked, the rest passed through."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(redact(text))

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding: the stream's
        return getattr(self.stream, name)


@contextmanager
def redacted_stderr() -> Iterator[None]:
    """Within: what is written to ``sys.stderr`` is redacted. For Hydra, which writes a config
    error (a mistyped override's "To append to your config use +KEY=VALUE") and a job's traceback
    there itself, with the overrides as typed, where no logging filter sees them."""
    original = sys.stderr
    sys.stderr = RedactedStream(original)
    try:
        yield
    finally:
        sys.stderr = original


class RedactingFilter(logging.Filter):
    """A logging filter (conf/train.yaml puts it on Hydra's handlers): each message with its
    URIs' passwords masked. Hydra logs a sweep's job overrides as they were typed."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


class RedactedOverrides(Callback):
    """A Hydra callback (conf/train.yaml): a failed job's overrides with their passwords masked.
    Hydra writes ``Error executing job with overrides: [...]`` from them straight to stderr,
    past the logging filter; the job itself has already run on the overrides as typed."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.overrides is not None:
            job_return.overrides = [redact(str(item)) for item in job_return.overrides]


def copy_redacted(source: Path, target: Path) -> Path:
    """A copy of the file or folder ``source`` at ``target``, every password in it redacted
    (Hydra's saved configs hold the URIs as typed)."""
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            copy_redacted(item, target / item.name)
    else:
        target.write_text(redact(source.read_text()))
    return target
