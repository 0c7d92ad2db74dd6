"""Training: arguments, per-mode model preparation, the Trainer and the ``train()`` entry point."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Arguments",
    "DataArguments",
    "LoraArguments",
    "ModelArguments",
    "QuantArguments",
    "TrainingArguments",
    "build_parser",
    "main",
    "parse_args",
    "train",
]

#: Where each public name lives; imported on first access, so importing the package stays cheap.
_LAZY = {
    "Arguments": ".arguments",
    "DataArguments": ".arguments",
    "LoraArguments": ".arguments",
    "ModelArguments": ".arguments",
    "QuantArguments": ".arguments",
    "TrainingArguments": ".arguments",
    "build_parser": ".arguments",
    "parse_args": ".arguments",
    "main": ".run",
    "train": ".run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
