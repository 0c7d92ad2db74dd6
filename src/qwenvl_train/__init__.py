"""qwenvl-train: fine-tune Qwen-VL, Qwen-VL-Chat and Qwen-VL-Chat-Int4 natively on current transformers.

Importing the package is cheap (no torch, no transformers); the native classes are registered with the
transformers Auto* factories as soon as transformers loads each factory (see :mod:`.registration`), so an original
checkpoint directory loads with ``AutoModelForCausalLM.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` and no remote code.
"""

from __future__ import annotations

from . import registration as _registration
from .lazy import lazy_getattr
from .quiet import silence_third_party as _silence_third_party
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


__getattr__ = lazy_getattr(__name__, _LAZY)


_silence_third_party()  # a user's own program is as quiet as the CLI (QWENVL_TRAIN_VERBOSE=1 keeps everything)
_registration.install()
