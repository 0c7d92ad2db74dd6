"""Registration of the native classes with the transformers Auto factories, without importing transformers.

``import qwenvl_train`` must stay cheap (the CLI answers ``--help`` in well under a second), yet
``import qwenvl_train; AutoModelForCausalLM.from_pretrained(dir)`` must find the Qwen-VL classes. So the package
installs a small import hook: the moment transformers is imported (by the user or by this package), the config,
model and tokenizer classes are registered. When transformers is already loaded, registration happens at once.

Registration imports :mod:`qwenvl_train.model` and :mod:`qwenvl_train.tokenizer`; when transformers is first
imported *by one of those* (half-initialized at that moment), registration waits until that module finishes and
calls :func:`register_when_ready` at its end.
"""

from __future__ import annotations

import sys
from types import ModuleType

from .import_hooks import after_import

#: Modules registration imports; while one of them is being initialized, registration must wait for it.
_REGISTRATION_MODULES = ("qwenvl_train.model", "qwenvl_train.tokenizer", "qwenvl_train.format")
_state = {"registered": False}


def register() -> None:
    """Register config, model and tokenizer with the transformers Auto classes (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    from .model.configuration import QwenVLConfig
    from .model.modeling import QwenVLForCausalLM, QwenVLModel
    from .tokenizer import QWenTokenizer, QwenVLTokenizer

    AutoConfig.register(QwenVLConfig.model_type, QwenVLConfig, exist_ok=True)
    AutoModel.register(QwenVLConfig, QwenVLModel, exist_ok=True)
    AutoModelForCausalLM.register(QwenVLConfig, QwenVLForCausalLM, exist_ok=True)
    AutoTokenizer.register(
        QwenVLConfig, tokenizer_class=QwenVLTokenizer, slow_tokenizer_class=QWenTokenizer, exist_ok=True
    )
    _state["registered"] = True


def _initializing(name: str) -> bool:
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def register_when_ready(caller: str | None = None) -> None:
    """Register now if transformers is loaded and no module registration needs is half-initialized.

    Args:
        caller: the module calling this at its very end (complete, though Python still marks it initializing).
    """
    if _state["registered"] or "transformers" not in sys.modules:
        return
    busy = [
        name
        for name in list(sys.modules)
        if name != caller
        and any(name == m or name.startswith(m + ".") for m in _REGISTRATION_MODULES)
        and _initializing(name)
    ]
    if not busy:
        register()


def _on_transformers(module: ModuleType) -> None:
    register_when_ready()


def install() -> None:
    """Register when transformers gets imported (at once when it already is)."""
    after_import("transformers", _on_transformers)
