"""Export: merging adapters into their base (:mod:`.merge`), writing the original checkpoint layout
(:mod:`.layout`) and re-quantizing to 4-bit GPTQ (:mod:`.quantize`)."""

from __future__ import annotations

from ..lazy import keep_function_over_submodule, lazy_getattr

__all__ = ["MergeError", "merge"]

#: Where each public name lives; imported on first access, so importing the package stays cheap.
_LAZY = {
    "MergeError": ".merge",
    "merge": ".merge",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


keep_function_over_submodule(__name__, "merge")
