"""Lazy package attributes: a package's public names imported from their submodule on first access (PEP 562),
so importing the package stays cheap (no torch, no transformers). Cheap to import itself."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``names`` maps each public name to the relative module defining it.

    Usage, in a package's ``__init__``: ``__getattr__ = lazy_getattr(__name__, {"scan": ".scan", ...})``.
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
