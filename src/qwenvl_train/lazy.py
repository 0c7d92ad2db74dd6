"""Lazy package attributes: a package's public names imported from their submodule on first access (PEP 562),
so importing the package stays cheap (no torch, no transformers). Cheap to import itself."""

from __future__ import annotations

import importlib
import sys
import types
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


def keep_function_over_submodule(package: str, name: str) -> None:
    """Keep ``package.name`` the function of that name when its submodule of the same name is imported.

    The import system binds each imported submodule on its package, which would replace the function (e.g.
    ``qwenvl_train.data.scan``, the function, by the module ``qwenvl_train.data.scan``); the submodule stays
    reachable as ``importlib.import_module(f"{package}.{name}")``.
    """

    class _Package(types.ModuleType):
        def __setattr__(self, attr: str, value: Any) -> None:
            if attr == name and isinstance(value, types.ModuleType):
                return
            super().__setattr__(attr, value)

    sys.modules[package].__class__ = _Package
