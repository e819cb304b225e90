"""Loading torch, transformers, peft and mlflow: about a million Python objects that live as
long as the process. Python's cyclic garbage collector would walk them at every full
collection: ~1,400 collections while they import (a fifth of the import's time) and each of
the run's own (Trainer.train and each memory measure collect), a quarter of a tiny run's time.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def heavy() -> Iterator[None]:
    """Import in this block what the process keeps to its end: the collector paused while it
    loads, then all the process holds frozen (``gc.freeze``: later collections pass it by; the
    few thousand objects the imports left as garbage stay, rather than a collection to find
    them). Once a process: where something is already frozen (a sweep's later jobs, whose
    predecessors' garbage would be kept for good), the block runs as it is."""
    if gc.get_freeze_count():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
