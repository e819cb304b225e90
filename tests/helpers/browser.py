"""Chromium for the browser tests (skipped without one, except in CI), and where they save
screenshots (a session fixture)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Debian's package (installed by `make test` where it can be) or any other build on PATH.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Chromium as root in a container, with no network to try.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    """A Chromium on PATH; without one this test is skipped, saying how, except in CI."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    message = "no chromium on PATH for the browser tests: sudo apt-get install chromium"
    if os.environ.get("PEFTLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save what they saw: PEFTLAB_SCREENSHOTS, else a temp folder."""
    chosen = os.environ.get("PEFTLAB_SCREENSHOTS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("screenshots")
