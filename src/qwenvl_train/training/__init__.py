"""Training: ``qwenvl-train train`` and the ``train()`` entry point, one concern per module.

- :mod:`.arguments`: the options (dataclasses, ``--config`` files) and their parsing; :mod:`.help`: ``--help``
  without importing transformers;
- :mod:`.validate`: every check that needs only the options, made while parsing;
- :mod:`.preflight`: the checks on the base checkpoint and the file system, before anything loads;
- :mod:`.base_checkpoint`: the base checkpoint's kind (chat or base, GPTQ) and layout, from its own files;
- :mod:`.prepare`: loading the tokenizer and model, and preparing the model for its tuning mode;
- :mod:`.distributed`: set-up before the model loads, leaving the process group, how a launched rank ends;
- :mod:`.trainer`: the Trainer itself (and its optimizer split for ``--vision_lr``); :mod:`.sampler`: which
  samples make up each micro-batch (length grouping, packing); :mod:`.vision_cache`: the frozen-vision feature
  cache; :mod:`.generation_eval`: ``--eval_data`` metrics;
- :mod:`.run_checkpoints`: the checkpoints a run writes (complete or not, resume) and the atomic final save;
- :mod:`.summary`: the start summary and number formatting;
- :mod:`.run`: ``train()`` and the command's entry, which wire the above together.
"""

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
