"""PEFT methods, one module each, registered by the ``method`` value of their config.

Every module of this package is imported here, so a new method is a new module (plus its yaml
in ``conf/peft/``) and nothing else changes.
"""

import importlib
import pkgutil

from peftlab.methods.base import REGISTRY, PeftMethod, of_peft_type

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "PeftMethod", "of_peft_type"]
