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
    """Register the Qwen-VL classes (and the tokenizer) with the transformers Auto factories; idempotent."""
    from ..registration import register as register_all

    register_all()


from ..registration import register_when_ready  # noqa: E402

register_when_ready(__name__)  # when transformers was first imported by this package's own modules
