"""The one exception type users see as a one-line message instead of a traceback, and the
range check every config section uses to raise it."""

from typing import Any

from peftlab.redaction import redact


class PeftlabError(Exception):
    """A problem the user can fix; the message names the key, its value and the way out.

    A URI's password in the message is masked here, once for every place the message goes:
    the printed line, a FAILED run's error tag, a sweep's traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


def require(condition: bool, key: str, value: Any, allowed: str) -> None:
    """Range check of a config value: one line naming the key, the value and what is allowed."""
    if not condition:
        raise PeftlabError(f"{key}={value!r} is not allowed: {allowed}")
