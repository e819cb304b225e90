"""Output folders that can't be made or written are one line, before anything loads."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class OutputDirCheck(Callback):
    """A run's output folder is created before Hydra's own attempt, which fails with a
    traceback: here a folder that can't be made or written is one line, before anything loads."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)  # resolves ${now:...} in the folder's name
        require_writable("hydra.run.dir", Path(config.hydra.run.dir))


def require_writable(key: str, directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise SystemExit(
            f"error: {key}={str(directory)!r}: cannot create or write this output folder "
            f"({error.strerror}); pass a writable one, e.g. {key}=outputs/run"
        ) from None
