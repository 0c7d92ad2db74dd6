"""Export: merging adapters into their base (:mod:`.merging`: ``merge`` and ``qwenvl-train merge``), writing the
original checkpoint layout (:mod:`.layout`) and re-quantizing to 4-bit GPTQ (:mod:`.quantize`).

The module is ``merging``, not ``merge``, so that importing it never hides the function ``export.merge``."""

from __future__ import annotations

from ..lazy import lazy_getattr

__all__ = ["MergeError", "merge"]

#: Where each public name lives; imported on first access, so importing the package stays cheap.
_LAZY = {
    "MergeError": ".merging",
    "merge": ".merging",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
