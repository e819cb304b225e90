"""Where peftlab keeps what it can make again: converted checkpoints, adapters of runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("PEFTLAB_CACHE", "~/.cache/peftlab")).expanduser()
