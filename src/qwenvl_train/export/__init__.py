"""Export: merging adapters into their base (:mod:`.merge`), writing the original checkpoint layout
(:mod:`.layout`) and re-quantizing to 4-bit GPTQ (:mod:`.quantize`)."""

from __future__ import annotations

from .merge import MergeError, merge

__all__ = ["MergeError", "merge"]
