"""Run a function right after a given module is imported, whoever imports it and when (cheap).

Used to register the Qwen-VL classes once transformers' Auto modules load (:mod:`.registration`) and to quiet
gptqmodel's logger once logbar loads (:mod:`.quiet`), without importing either ahead of need.

A call-back may import other modules. When those could be half-imported at that moment (transformers imports
its Auto modules from the middle of other modules: ``transformers.modeling_layers`` imports ``AutoModel`` before
it defines ``GradientCheckpointingLayer``), :func:`after_import` is given ``settle`` packages: the call waits
until no module of those packages is being imported any more. That is known from this module's own loader
wrappers (it counts the modules of those packages it sees start and finish), with the public import-system
interfaces only.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections import Counter
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


class _Hook(NamedTuple):
    name: str
    callback: Callable[[ModuleType], None]
    settle: tuple[str, ...]


class _Loader(importlib.abc.Loader):
    """Wraps a module's own loader: counts the module as being imported while it executes, then tells the
    watcher it has finished."""

    def __init__(self, inner: importlib.abc.Loader, watcher: _Watcher, name: str) -> None:
        self.inner = inner
        self.watcher = watcher
        self.name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        watcher = self.watcher
        with watcher.lock:
            packages = watcher.settle_packages(self.name)
            watcher.importing.update(packages)
        try:
            self.inner.exec_module(module)
        finally:
            with watcher.lock:
                watcher.importing.subtract(packages)
        watcher.run_ready()

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, get_source, ...
        return getattr(self.inner, name)


class _Watcher(importlib.abc.MetaPathFinder):
    """The one finder on ``sys.meta_path`` while call-backs wait: wraps the loader of each module that a hook
    waits for or that belongs to a package some hook waits to settle; leaves once no hook is left."""

    def __init__(self) -> None:
        self.hooks: list[_Hook] = []
        #: Modules of each settle package being imported now (started, not finished), in any thread.
        self.importing: Counter[str] = Counter()
        self.lock = threading.Lock()

    def settle_packages(self, name: str) -> list[str]:
        return sorted({p for h in self.hooks for p in h.settle if _within(name, p)})

    def watches(self, name: str) -> bool:
        return any(h.name == name or any(_within(name, p) for p in h.settle) for h in self.hooks)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if not self.watches(fullname):
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, self, fullname)
                return spec
        return None

    def run_ready(self) -> None:
        """Call (once) each hook whose module is imported and whose settle packages are idle."""
        while True:
            with self.lock:
                ready = next(
                    (
                        h
                        for h in self.hooks
                        if h.name in sys.modules and not any(self.importing[p] for p in h.settle)
                    ),
                    None,
                )
                if ready is None:
                    return
                self.hooks.remove(ready)
                if not self.hooks and self in sys.meta_path:
                    sys.meta_path.remove(self)
            ready.callback(sys.modules[ready.name])


_watcher = _Watcher()


def after_import(name: str, callback: Callable[[ModuleType], None], settle: tuple[str, ...] = ()) -> None:
    """Call ``callback(module)`` once module ``name`` (dotted names too) has been imported: now if it already is.

    Args:
        name: the module to wait for.
        callback: called once with the module.
        settle: packages (``"transformers"``) the call waits to be idle: it happens once ``name`` is imported and
            no module of these packages is still being imported, so the call-back may import them.
    """
    if name in sys.modules:
        callback(sys.modules[name])
        return
    hook = _Hook(name, callback, tuple(settle))
    if hook not in _watcher.hooks:
        _watcher.hooks.append(hook)
    if _watcher not in sys.meta_path:
        sys.meta_path.insert(0, _watcher)
