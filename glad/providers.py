"""Providers: modules that register datasets and protocol variants when imported.

A package names one with `register_provider(module)`; it is imported the first time a
dataset name or protocol variant nobody registered is asked for (`load_providers`). glad
names none by itself: its engine asks for glad.world, the built-in offline datasets.
"""

from __future__ import annotations

import importlib

_providers: dict[str, bool] = {}  # module name -> imported yet


def register_provider(module: str) -> None:
    """Name a module whose import registers datasets (and protocol variants); it is imported
    the first time a name nobody registered is asked for."""
    _providers.setdefault(module, False)


def load_providers() -> None:
    """Import every provider not imported yet (a missing dependency inside one is an error)."""
    for module, loaded in list(_providers.items()):
        if not loaded:
            _providers[module] = True
            importlib.import_module(module)
