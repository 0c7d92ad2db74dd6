"""Registration of the native classes with the transformers Auto factories, without importing transformers.

``import qwenvl_train`` must stay cheap (the CLI answers ``--help`` in well under a second), yet
``import qwenvl_train; AutoModelForCausalLM.from_pretrained(dir)`` must find the Qwen-VL classes. So the package
installs one import hook (:func:`install`, run by ``import qwenvl_train``): once transformers has loaded the
module defining an Auto factory, the matching Qwen-VL classes are imported and registered with it:

- ``transformers.models.auto.configuration_auto`` -> ``AutoConfig``: :mod:`.model.configuration`;
- ``transformers.models.auto.tokenization_auto`` -> ``AutoTokenizer``: :mod:`.tokenizer`;
- ``transformers.models.auto.modeling_auto`` -> ``AutoModel``, ``AutoModelForCausalLM``: :mod:`.model.modeling`.

So a process that only tokenizes (``check-data``) never imports the model, and the classes never import this
module: the dependency goes one way. The registration waits until no module of transformers or of this package
is half-imported (see :func:`.import_hooks.after_import`), since transformers imports its Auto modules from the
middle of other modules. :func:`register` does all three at once (idempotent).

The modules registered are imported only inside the call-backs; this module sits in the model's layer, beside
the classes it registers (the layer map is in ``tests/test_layering.py`` and ``docs/architecture.md``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

from .import_hooks import after_import

#: Packages that must be idle (nothing half-imported) before a registration imports the classes.
SETTLE = ("transformers", "qwenvl_train")


def _register_config(auto: ModuleType) -> None:
    from .model.configuration import QwenVLConfig

    auto.AutoConfig.register(QwenVLConfig.model_type, QwenVLConfig, exist_ok=True)


def _register_tokenizer(auto: ModuleType) -> None:
    from .model.configuration import QwenVLConfig
    from .tokenizer import QWenTokenizer, QwenVLTokenizer

    auto.AutoTokenizer.register(
        QwenVLConfig, tokenizer_class=QwenVLTokenizer, slow_tokenizer_class=QWenTokenizer, exist_ok=True
    )


def _register_models(auto: ModuleType) -> None:
    from .model.configuration import QwenVLConfig
    from .model.modeling import QwenVLForCausalLM, QwenVLModel

    auto.AutoModel.register(QwenVLConfig, QwenVLModel, exist_ok=True)
    auto.AutoModelForCausalLM.register(QwenVLConfig, QwenVLForCausalLM, exist_ok=True)


#: transformers module defining Auto factories -> the registration of our classes with them.
REGISTRATIONS: dict[str, Callable[[ModuleType], None]] = {
    "transformers.models.auto.configuration_auto": _register_config,
    "transformers.models.auto.tokenization_auto": _register_tokenizer,
    "transformers.models.auto.modeling_auto": _register_models,
}


def register() -> None:
    """Register config, model and tokenizer with the transformers Auto classes now (idempotent)."""
    for name, registration in REGISTRATIONS.items():
        registration(importlib.import_module(name))


def install() -> None:
    """Register each class once transformers loads its Auto factory (at once for those already loaded)."""
    for name, registration in REGISTRATIONS.items():
        after_import(name, registration, settle=SETTLE)
