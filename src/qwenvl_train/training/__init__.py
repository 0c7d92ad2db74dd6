"""Training: arguments, per-mode model preparation, the Trainer and the ``train()`` entry point."""

from __future__ import annotations

from .arguments import (
    Arguments,
    DataArguments,
    LoraArguments,
    ModelArguments,
    QuantArguments,
    TrainingArguments,
    build_parser,
    parse_args,
)
from .run import main, train

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
