"""Export: merging adapters into their base (:mod:`.merge`), writing the original checkpoint layout
(:mod:`.layout`) and re-quantizing to 4-bit GPTQ (:mod:`.quantize`)."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["MergeError", "merge"]

#: Where each public name lives; imported on first access, so importing the package stays cheap.
_LAZY = {
    "MergeError": ".merge",
    "merge": ".merge",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """The import system binds each imported submodule on its package; ``merge`` must stay the function (the
    submodule is ``importlib.import_module("qwenvl_train.export.merge")``), as it was when this file imported it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "merge" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
