"""Configuration of the native Qwen-VL model (``model_type: "qwen"``).

Reads the ``config.json`` of the original Qwen-VL / Qwen-VL-Chat checkpoints as it is. Two of its keys are
deliberately not acted upon: ``auto_map`` (dropped, so transformers never looks for the remote code) and the
``bf16``/``fp16``/``fp32`` flags the remote code used to pick a dtype (kept for round trips, never read;
``torch_dtype``/``dtype`` decides the dtype like for any other transformers model).
"""

from __future__ import annotations

import math
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .visual_config import VISUAL_DEFAULTS


@strict
class QwenVLConfig(PreTrainedConfig):
    """Qwen-VL configuration; the defaults are those of Qwen-VL-Chat (7B LLM + ViT-bigG + 256-query resampler).

    The language-model keys keep the original names (``kv_channels``, ``seq_length``, ``no_bias``, ...). The
    vision tower is described by the plain dict ``visual`` exactly as in the original ``config.json``.
    """

    model_type = "qwen"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    vocab_size: int = 151936
    hidden_size: int = 4096
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    kv_channels: int = 128
    intermediate_size: int = 22016
    emb_dropout_prob: int | float = 0.0
    attn_dropout_prob: int | float = 0.0
    layer_norm_epsilon: int | float = 1e-6
    initializer_range: int | float = 0.02
    max_position_embeddings: int = 8192
    seq_length: int = 2048
    rotary_pct: int | float = 1.0
    rotary_emb_base: int | float = 10000
    use_dynamic_ntk: bool = True
    use_logn_attn: bool = True
    no_bias: bool = True
    scale_attn_weights: bool = True
    use_cache: bool = True
    tie_word_embeddings: bool = False
    visual: dict | None = None
    # Carried so that a saved config still reads like the original one; this implementation never uses them.
    bf16: bool = False
    fp16: bool = False
    fp32: bool = False
    use_flash_attn: bool | str = "auto"
    onnx_safe: bool | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        # The remote-code pointer must not survive: with it, `trust_remote_code=True` would try to import
        # configuration_qwen.py / modeling_qwen.py, which a directory we save does not contain.
        kwargs.pop("auto_map", None)
        self.visual = {**VISUAL_DEFAULTS, **(self.visual or {})}
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Checks the shape constraints the model relies on (called by the ``@strict`` machinery)."""
        if self.kv_channels * self.num_attention_heads != self.hidden_size:
            raise ValueError(
                f"kv_channels * num_attention_heads ({self.kv_channels} * {self.num_attention_heads}) must equal "
                f"hidden_size ({self.hidden_size}), as in the original Qwen attention"
            )
        visual = self.visual or {}
        n_queries = int(visual.get("n_queries", VISUAL_DEFAULTS["n_queries"]))
        if math.isqrt(n_queries) ** 2 != n_queries:
            raise ValueError(
                f"visual['n_queries'] must be a perfect square (the resampler grid), got {n_queries}"
            )
        output_dim = int(visual.get("output_dim", self.hidden_size))
        if output_dim != self.hidden_size:
            raise ValueError(
                f"visual['output_dim'] ({output_dim}) must equal hidden_size ({self.hidden_size})"
            )
        if output_dim < 128 or output_dim % 128:
            raise ValueError(
                f"visual['output_dim'] ({output_dim}) must be a positive multiple of 128: the resampler uses "
                "output_dim // 128 heads"
            )

    @property
    def n_queries(self) -> int:
        """Number of resampler queries, i.e. of positions between ``<img>`` and ``</img>`` (256 when released)."""
        return int(self.visual["n_queries"])

    @property
    def image_size(self) -> int:
        """Side in pixels of the square images the vision tower takes (448 when released)."""
        return int(self.visual["image_size"])

    @property
    def image_start_id(self) -> int:
        """Token id of ``<img>`` (151857)."""
        return int(self.visual["image_start_id"])

    @property
    def image_end_id(self) -> int:
        """Token id of ``</img>`` (``<img>`` + 1 = 151858)."""
        return self.image_start_id + 1

    @property
    def image_pad_id(self) -> int:
        """Token id of ``<imgpad>`` (``<img>`` + 2 = 151859), the filler of an image span."""
        return self.image_start_id + 2
