"""Run a function right after a given top-level module is imported, whoever imports it and when (cheap).

Used to register the Qwen-VL classes once transformers loads (:mod:`.registration`) and to quiet gptqmodel's
logger once logbar loads (:mod:`.quiet`), without importing either ahead of need.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any


class _Loader(importlib.abc.Loader):
    """Wraps the module's own loader; calls back once the module has been executed."""

    def __init__(self, inner: importlib.abc.Loader, callback: Callable[[ModuleType], None]) -> None:
        self.inner = inner
        self.callback = callback

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        self.callback(module)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self.inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Watches for one module name, once: asks the other finders for its spec and wraps the loader."""

    def __init__(self, name: str, callback: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, self.callback)
                return spec
        return None


def after_import(name: str, callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(module)`` once ``name`` (a top-level module) has been imported: now if it already is."""
    if name in sys.modules:
        callback(sys.modules[name])
    elif not any(isinstance(f, _Finder) and f.name == name and f.callback is callback for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(name, callback))
