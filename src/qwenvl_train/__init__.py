"""qwenvl-train: fine-tune Qwen-VL, Qwen-VL-Chat and Qwen-VL-Chat-Int4 natively on current transformers.

Importing the package is cheap (no torch, no transformers); the native classes are registered with the
transformers Auto* factories as soon as transformers is imported (see :mod:`.registration`), so an original
checkpoint directory loads with ``AutoModelForCausalLM.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` and no remote code.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import registration as _registration
from .registration import register

__version__ = "0.1.0"
__all__ = ["QwenVLConfig", "QwenVLForCausalLM", "QwenVLTokenizer", "QWenTokenizer", "register"]

#: Public names and the module each comes from, imported on first access.
_LAZY = {
    "QwenVLConfig": ".model.configuration",
    "QwenVLForCausalLM": ".model.modeling",
    "QwenVLTokenizer": ".tokenizer",
    "QWenTokenizer": ".tokenizer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_registration.install()
