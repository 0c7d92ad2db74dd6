"""Export: merging adapters into their base (:mod:`.merge`), writing the original checkpoint layout
(:mod:`.layout`) and re-quantizing to 4-bit GPTQ (:mod:`.quantize`)."""

from __future__ import annotations

import importlib
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
