"""Training: arguments, per-mode model preparation, the Trainer and the ``train()`` entry point."""

from __future__ import annotations

from ..lazy import lazy_getattr

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


__getattr__ = lazy_getattr(__name__, _LAZY)
