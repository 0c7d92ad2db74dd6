"""The native Qwen-VL model: configuration, language model, vision tower and resampler.

``register()`` makes ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` resolve ``model_type: "qwen"``
to these classes, so an original checkpoint directory loads without ``trust_remote_code``.
"""

from __future__ import annotations

from .configuration import QwenVLConfig
from .image_processing import CLIP_MEAN, CLIP_STD, image_transform
from .modeling import QwenVLForCausalLM, QwenVLModel, QwenVLPreTrainedModel

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


def register() -> None:
    """Register the Qwen-VL classes with the transformers Auto factories; safe to call any number of times."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    AutoConfig.register(QwenVLConfig.model_type, QwenVLConfig, exist_ok=True)
    AutoModel.register(QwenVLConfig, QwenVLModel, exist_ok=True)
    AutoModelForCausalLM.register(QwenVLConfig, QwenVLForCausalLM, exist_ok=True)
