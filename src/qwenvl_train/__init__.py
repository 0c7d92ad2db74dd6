"""qwenvl-train: fine-tune Qwen-VL, Qwen-VL-Chat and Qwen-VL-Chat-Int4 natively on current transformers.

Importing the package registers the native classes with the transformers Auto* factories, so an original
checkpoint directory loads with ``AutoModelForCausalLM.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` and no remote code.
"""

from __future__ import annotations

from .model import QwenVLConfig, QwenVLForCausalLM
from .model import register as _register_model
from .tokenizer import QWenTokenizer, QwenVLTokenizer

__version__ = "0.1.0"
__all__ = ["QwenVLConfig", "QwenVLForCausalLM", "QwenVLTokenizer", "QWenTokenizer", "register"]


def register() -> None:
    """Register config, model and tokenizer with the transformers Auto classes (idempotent)."""
    from transformers import AutoTokenizer

    _register_model()
    AutoTokenizer.register(
        QwenVLConfig,
        tokenizer_class=QwenVLTokenizer,
        slow_tokenizer_class=QWenTokenizer,
        exist_ok=True,
    )


register()
