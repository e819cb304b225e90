"""Data formats, one module each, registered by the ``format`` value of the dataset config.

Every module of this package is imported here, so a new format is a new module (plus a row in
``FORMATS`` in ``tests/helpers/matrices.py``) and nothing else changes.
"""

import importlib
import pkgutil

from peftlab.formats.base import REGISTRY, BadRow, DataFormat, Example, Segment

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "BadRow", "DataFormat", "Example", "Segment", "of"]


def of(cfg) -> DataFormat:
    """The format a dataset config names (checked by the config's schema)."""
    return REGISTRY[cfg.format](cfg)
