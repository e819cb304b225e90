"""Hugging Face Hub access that fails fast and clearly when the Hub can't be reached.

transformers and datasets retry an unreachable Hub for about a minute before failing with a
long traceback. peftlab asks briefly, each time it resolves an id, and otherwise falls back to
the local HF cache.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from peftlab.errors import PeftlabError

PROBE_TIMEOUT_S = 3.0


def hub_reachable() -> bool:
    """Asked afresh each time (a refused connection answers in milliseconds), so a long-lived
    process sees the Hub come and go."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S)
    except urllib.error.HTTPError:
        return True  # the server answered; an error status still means it is there
    except (urllib.error.URLError, TimeoutError, OSError):
        return False
    return True


def resolve(
    name_or_path: str,
    *,
    key: str,
    repo_type: str,
    offline_alternative: str,
    revision: str | None = None,
) -> str:
    """A local path or Hub id that loads without waiting on an unreachable Hub.

    Local directories and files pass through; a Hub id passes through when the Hub answers, and
    otherwise becomes the path of its cached snapshot, or a one-line error naming the way out.
    """
    if Path(name_or_path).expanduser().exists():
        return name_or_path
    if name_or_path.startswith(("/", ".", "~")):
        raise PeftlabError(f"{key}={name_or_path!r}: no such file or directory")
    if hub_reachable():
        return name_or_path
    try:
        return snapshot_download(
            name_or_path, repo_type=repo_type, revision=revision, local_files_only=True
        )
    except (LocalEntryNotFoundError, ValueError) as error:
        raise PeftlabError(
            f"{key}={name_or_path!r}: the Hugging Face Hub is unreachable and this {repo_type} "
            f"is not in the local cache ({constants.HF_HUB_CACHE}); use {offline_alternative} "
            "for the embedded offline default, or run once with Hub access to cache it"
        ) from error
