"""The native Qwen-VL model: configuration, language model, vision tower and resampler.

- :mod:`.configuration` is ``QwenVLConfig`` (``model_type: "qwen"``);
- :mod:`.modeling` is the model (``QwenVLModel``, ``QwenVLForCausalLM``), built from :mod:`.attention`,
  :mod:`.rotary`, :mod:`.vision` and :mod:`.loss` (:mod:`.cce`: the optional Cut Cross-Entropy kernel);
- :mod:`.image_processing` turns a picture into the tower's input.

Importing the package loads none of them: each public name is imported on first access, so
``qwenvl_train.model.configuration`` does not load the model. Once transformers loads its Auto factories,
``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` resolve ``model_type: "qwen"`` to these classes (see
:mod:`qwenvl_train.registration`; ``register()`` does it at once), so an original checkpoint directory loads
without ``trust_remote_code``.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "QwenVLConfig",
    "QwenVLForCausalLM",
    "QwenVLModel",
    "QwenVLPreTrainedModel",
    "image_transform",
    "register",
]

#: Where each public name lives; imported on first access.
_LAZY = {
    "QwenVLConfig": ".configuration",
    "CLIP_MEAN": ".image_processing",
    "CLIP_STD": ".image_processing",
    "image_transform": ".image_processing",
    "QwenVLForCausalLM": ".modeling",
    "QwenVLModel": ".modeling",
    "QwenVLPreTrainedModel": ".modeling",
    "register": "..registration",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
