"""The Qwen-VL language model with its image splice, written natively for current transformers.

Parameter names and numerics follow the original remote code (``modeling_qwen.py`` of Qwen-VL-Chat):

* ``transformer.wte`` -> embedding dropout -> image splice -> ``transformer.h.N`` -> ``transformer.ln_f`` ->
  ``lm_head``. Blocks are pre-norm with fp32 RMSNorm; attention uses a fused ``c_attn`` (Q | K | V, with bias)
  and the MLP is ``c_proj(w1(x) * silu(w2(x)))``.
* RoPE is rotate-half over the head dim, applied in fp32, at positions ``past .. past + L - 1`` taken from the
  cache length, like in the original (training uses right padding). Explicit ``position_ids`` are used only when
  given (packed samples, whose positions restart at 0).
* Attention goes through transformers' attention-function registry (:mod:`.attention`): ``eager`` keeps the
  original's order of operations, ``sdpa``/``flex_attention``/``flash_attention_*`` work as for native models.
* At inference only (``model.eval()``), prompts longer than ``seq_length`` get dynamic NTK (a larger RoPE base
  chosen at prefill and kept for the decode steps) and logn query scaling. Training mode never uses either.
* Images: ``pixel_values[k]`` replaces the ``n_queries`` embeddings between the k-th ``<img>``/``</img>`` pair of
  the batch in reading order (row by row, left to right), at prefill only (empty cache).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import logging

from .attention import attention_interface, causal_additive_mask
from .configuration import QwenVLConfig
from .loss import DEFAULT_CHUNK_SIZE, labelled_cross_entropy
from .rotary import (  # noqa: F401  (re-exported: the rotary helpers used to live here)
    RotaryTables,
    apply_rotary,
    logn_scale,
    ntk_alpha,
    ntk_base,
    rotary_cos_sin,
)
from .vision import Resampler, ResamplerAttention, VisionTransformer, sincos_pos_table

logger = logging.get_logger(__name__)


# --------------------------------------------------------------------------------------------------------------
# Length extrapolation (inference only) and rotary embedding
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# Language-model blocks
# --------------------------------------------------------------------------------------------------------------


class QwenVLRMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back to the input dtype, then scaled by ``weight``."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class QwenVLAttention(nn.Module):
    def __init__(self, config: QwenVLConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.kv_channels
        self.projection_size = self.num_heads * self.head_dim
        self.scaling = self.head_dim**-0.5
        self.is_causal = True  # read by the SDPA and flash kernels of transformers
        self.c_attn = nn.Linear(config.hidden_size, 3 * self.projection_size)
        self.c_proj = nn.Linear(self.projection_size, config.hidden_size, bias=not config.no_bias)
        self.attn_dropout = nn.Dropout(config.attn_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        logn: torch.Tensor | None = None,
        attention_mask: Any = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``kwargs`` (e.g. ``position_ids`` of packed samples) go to the attention kernel, as in native models."""
        batch, length, _ = hidden_states.shape
        heads_shape = (batch, length, self.num_heads, self.head_dim)
        query, key, value = self.c_attn(hidden_states).split(self.projection_size, dim=-1)
        query = apply_rotary(query.view(heads_shape), cos, sin).transpose(1, 2)
        key = apply_rotary(key.view(heads_shape), cos, sin).transpose(1, 2)
        value = value.view(heads_shape).transpose(1, 2)

        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        if logn is not None:
            query = query * logn.view(1, 1, -1, 1).type_as(query)

        kernel = attention_interface(self.config._attn_implementation, output_attentions)
        out, weights = kernel(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attn_dropout.p if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        out = out.reshape(batch, length, self.projection_size)
        return self.c_proj(out), weights


class QwenVLMLP(nn.Module):
    def __init__(self, config: QwenVLConfig) -> None:
        super().__init__()
        width = config.intermediate_size // 2
        self.w1 = nn.Linear(config.hidden_size, width, bias=not config.no_bias)
        self.w2 = nn.Linear(config.hidden_size, width, bias=not config.no_bias)
        self.c_proj = nn.Linear(width, config.hidden_size, bias=not config.no_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.w1(x) * F.silu(self.w2(x)))


class QwenVLBlock(GradientCheckpointingLayer):
    def __init__(self, config: QwenVLConfig, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = QwenVLRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = QwenVLAttention(config, layer_idx)
        self.ln_2 = QwenVLRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = QwenVLMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        logn: torch.Tensor | None = None,
        attention_mask: Any = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, weights = self.attn(
            self.ln_1(hidden_states),
            cos,
            sin,
            logn=logn,
            attention_mask=attention_mask,
            cache=cache,
            output_attentions=output_attentions,
            **kwargs,
        )
        hidden_states = hidden_states + attn_out
        hidden_states = hidden_states + self.mlp(self.ln_2(hidden_states))
        return hidden_states, weights


def build_attention_mask(
    attention_mask: torch.Tensor | None, q_len: int, past_len: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """Turn a 2D padding mask ``[B, past + L]`` (1 = real token) into ``(additive_mask, is_causal)``.

    The additive mask is ``[B, 1, L, past + L]`` with 0 where attention is allowed and the dtype's minimum
    elsewhere (never -inf, so a fully padded row cannot produce NaN). Without padding, a prefill returns
    ``(None, True)`` and a one-token decode step ``(None, False)``. This is the mask of the original remote code;
    the model builds its masks with transformers' ``create_causal_mask``, which gives eager attention the same
    values (tested), and other kernels the form they take.
    """
    kv_len = past_len + q_len
    if attention_mask is not None:
        check_attention_mask(attention_mask, q_len, past_len)
        if bool(attention_mask.all()):
            attention_mask = None
    if attention_mask is None:
        if q_len == 1:
            return None, False
        if past_len == 0:
            return None, True
        return causal_additive_mask(q_len, kv_len, dtype, device), False
    causal = causal_additive_mask(q_len, kv_len, dtype, device)
    padding = attention_mask[:, None, None, :].to(device=device, dtype=torch.bool)
    return causal.masked_fill(~padding, torch.finfo(dtype).min), False


def check_attention_mask(attention_mask: torch.Tensor, q_len: int, past_len: int) -> None:
    """Raise a clear error unless ``attention_mask`` is 2D ``[batch, past + q_len]`` or an already prepared 4D
    mask (as ``generate`` builds for static caches), which goes to the kernels as it is."""
    kv_len = past_len + q_len
    if len(attention_mask.shape) == 4:
        return
    if len(attention_mask.shape) != 2:
        raise ValueError(
            f"attention_mask must be 2D [batch, past + length] (or a prepared 4D mask), got shape "
            f"{tuple(attention_mask.shape)}"
        )
    if attention_mask.shape[-1] != kv_len:
        raise ValueError(
            f"attention_mask has {attention_mask.shape[-1]} columns but the cache holds {past_len} positions "
            f"and the input {q_len}: it must cover past + current tokens ({kv_len})"
        )


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


class QwenVLPreTrainedModel(PreTrainedModel):
    config_class = QwenVLConfig
    config: QwenVLConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["QwenVLBlock", "VisionTransformer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.from_pretrained``, then re-freeze ``attn_pool.pos_embed``: transformers rebuilds
        loaded parameters with ``requires_grad=True``, while the original keeps the sin-cos table frozen."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        for module in model.modules():
            if isinstance(module, Resampler):
                module.pos_embed.requires_grad_(False)
        return loaded

    def _set_gradient_checkpointing(
        self, enable: bool = True, gradient_checkpointing_func: Any = None, every_n_layers: int = 1
    ) -> None:
        """transformers' switch, with ``every_n_layers`` counted per stack: blocks ``0, k, 2k, ...`` of the
        language model and, separately, of the vision tower are checkpointed (transformers counts the blocks of
        both stacks as one sequence, so the vision tower's pattern would depend on the number of LLM layers)."""
        super()._set_gradient_checkpointing(
            enable=enable,
            gradient_checkpointing_func=gradient_checkpointing_func or checkpoint,
            every_n_layers=every_n_layers,
        )
        if enable:
            for stack in self.modules():
                if isinstance(stack, nn.ModuleList) and all(
                    isinstance(block, GradientCheckpointingLayer) for block in stack
                ):
                    for i, block in enumerate(stack):
                        block.gradient_checkpointing = i % every_n_layers == 0

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Random init for a fresh model; weights loaded from a checkpoint are flagged and left untouched."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, QwenVLRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, (QwenVLAttention, QwenVLMLP)):
            # GPT-2 style: residual projections shrink with depth, as in the original init.
            init.normal_(
                module.c_proj.weight, mean=0.0, std=std / math.sqrt(2 * self.config.num_hidden_layers)
            )
        elif isinstance(module, ResamplerAttention):
            # The original builds this as nn.MultiheadAttention, whose own reset (Xavier-uniform projections, zero
            # biases) its _init_weights leaves alone (not an nn.Linear). A std-0.02 normal instead makes the
            # resampler's attention uniform at init: every query averages all patches, where a shape is loses
            # almost entirely, and a model trained from random weights cannot learn positions for a long time.
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, Resampler):
            init.trunc_normal_(module.query, mean=0.0, std=0.02)
            init.copy_(module.pos_embed, sincos_pos_table(module.embed_dim, module.grid_size))
        elif isinstance(module, VisionTransformer):
            width = module.positional_embedding.shape[-1]
            init.normal_(module.positional_embedding, mean=0.0, std=width**-0.5)
            init.normal_(module.proj, mean=0.0, std=module.output_dim**-0.5)


class QwenVLModel(QwenVLPreTrainedModel):
    """The ``transformer`` of Qwen-VL: token embedding, image splice, decoder blocks, final norm."""

    def __init__(self, config: QwenVLConfig) -> None:
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.drop = nn.Dropout(config.emb_dropout_prob)
        self.h = nn.ModuleList([QwenVLBlock(config, i) for i in range(config.num_hidden_layers)])
        self.ln_f = QwenVLRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.visual = VisionTransformer(config)
        self.rotary_dim = int(config.kv_channels * config.rotary_pct)
        self.rotary = RotaryTables(self.rotary_dim)
        # Dynamic-NTK alpha chosen at the last eval-mode prefill; decode steps reuse it, as in the original.
        self._ntk_alpha = 1.0
        # Run the vision tower at every prefill, on a blank image when there is none (set_vision_every_step).
        self.vision_every_step = False
        self.gradient_checkpointing = False
        self.post_init()

    def set_vision_every_step(self, enabled: bool = True) -> None:
        """Run ``visual`` at every prefill, on one blank image when the input holds none.

        For sharded or data-parallel training (DeepSpeed ZeRO, FSDP): their collectives follow the modules that
        run, so every rank must run the same modules in the same order, forward and backward, whether its batch
        has images or not. ZeRO-3 in particular records the module order of one step and replays it; a rank whose
        order differs drops its trace and syncs at the next step while the others fetch weights, and all hang.
        The blank image runs exactly where real images do (``splice_images``) and its features join the graph
        through an empty splice: the output is bit-identical and the vision parameters that train get zero
        gradients. Not saved with the model (it is not a config field).
        """
        self.vision_every_step = enabled

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def image_spans(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Locate the image spans: ``(rows, starts)`` of every ``<img>`` in reading order, after checking that
        each one is closed by ``</img>`` exactly ``n_queries + 1`` positions later on the same row."""
        config = self.config
        starts = (input_ids == config.image_start_id).nonzero()
        ends = (input_ids == config.image_end_id).nonzero()
        if starts.shape[0] != ends.shape[0]:
            raise ValueError(
                f"input_ids hold {starts.shape[0]} <img> ({config.image_start_id}) but {ends.shape[0]} </img> "
                f"({config.image_end_id}) tokens"
            )
        if starts.numel():
            same_row = starts[:, 0] == ends[:, 0]
            inner = ends[:, 1] - starts[:, 1] - 1
            bad = (~same_row | (inner != config.n_queries)).nonzero()
            if bad.numel():
                k = int(bad[0, 0])
                raise ValueError(
                    f"image span {k} (row {int(starts[k, 0])}, <img> at column {int(starts[k, 1])}) must hold exactly "
                    f"{config.n_queries} positions between <img> and </img> on one row, found "
                    f"{int(inner[k]) if bool(same_row[k]) else 'a span crossing rows'}"
                )
        return starts[:, 0], starts[:, 1]

    def splice_images(
        self,
        inputs_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Replace the embeddings inside every image span with the resampled image features.

        ``image_features`` ``[n_images, n_queries, hidden]`` are what ``visual(pixel_values)`` returns, computed
        beforehand (the frozen-vision feature cache, ``training/vision_cache.py``): given them, the tower does not
        run and ``pixel_values`` must not be passed.
        """
        rows, starts = self.image_spans(input_ids)
        if image_features is not None:
            if pixel_values is not None:
                raise ValueError("pass either pixel_values or image_features, not both")
            if rows.numel() != image_features.shape[0]:
                raise ValueError(
                    f"input_ids hold {rows.numel()} image span(s) but {image_features.shape[0]} image feature "
                    "row(s) were given"
                )
            if rows.numel() == 0:
                return inputs_embeds
            return self._fill_spans(inputs_embeds, rows, starts, image_features.to(inputs_embeds.dtype))
        n_images = 0 if pixel_values is None else pixel_values.shape[0]
        if rows.numel() != n_images:
            hint = " (pass pixel_values)" if pixel_values is None else ""
            raise ValueError(
                f"input_ids hold {rows.numel()} image span(s) but {n_images} image(s) were given{hint}; image k "
                "fills the k-th <img>...</img> span of the batch in reading order"
            )
        if n_images == 0:
            if not self.vision_every_step:
                return inputs_embeds
            size = self.visual.image_size
            pixel_values = inputs_embeds.new_zeros(1, 3, size, size)
        features = self.visual(pixel_values).to(inputs_embeds.dtype)  # [n_images, n_queries, hidden]
        if n_images == 0:
            # The blank image's features fill no span: same graph shape as a real splice, zero gradients.
            features = features[:0]
        return self._fill_spans(inputs_embeds, rows, starts, features)

    def _fill_spans(
        self, inputs_embeds: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        n_queries = self.config.n_queries
        offsets = torch.arange(1, n_queries + 1, device=starts.device)
        cols = (starts[:, None] + offsets[None, :]).reshape(-1)
        rows = rows[:, None].expand(-1, n_queries).reshape(-1)
        return inputs_embeds.index_put((rows, cols), features.reshape(-1, features.shape[-1]))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        position_ids: torch.LongTensor | None = None,
        image_features: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast | tuple:
        """Run the decoder. ``past_key_values`` is an alias of ``cache``.

        Positions come from the cache length, as in the original, unless ``position_ids`` ``[B, L]`` are given:
        packed samples (positions restarting at 0 where a sample starts, no ``attention_mask``) then attend only
        within their own sample. ``image_features`` may replace ``pixel_values`` (the tower's output computed
        beforehand, see :meth:`splice_images`).
        """
        config = self.config
        cache = _pick_cache(cache, past_key_values)
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        if use_cache is None:  # a training forward keeps no KV cache (the original's finetune.py sets
            # use_cache=False): it would copy every layer's keys and values for nothing
            use_cache = config.use_cache and not (self.training and torch.is_grad_enabled())
        return_dict = config.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if self.gradient_checkpointing and self.training and use_cache:
            use_cache = False
        if not use_cache:
            cache = None
        elif cache is None:
            cache = DynamicCache(config=config)
        past_len = cache.get_seq_length() if cache is not None else 0

        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        hidden_states = self.drop(inputs_embeds)
        if input_ids is None:
            if pixel_values is not None or image_features is not None:
                raise ValueError("pixel_values need input_ids (to find the image spans), not inputs_embeds")
        elif past_len == 0:
            hidden_states = self.splice_images(hidden_states, input_ids, pixel_values, image_features)
        elif pixel_values is not None and bool((input_ids == config.image_start_id).any()):
            # Decode steps ignore pixel_values, but an image span after the prefill would silently stay text.
            raise ValueError(
                f"an image span arrived after the prefill (the cache holds {past_len} positions): images are "
                "spliced at prefill only, so pass image prompts with an empty cache"
            )

        length = hidden_states.shape[1]
        device = hidden_states.device
        extrapolate = not self.training
        if config.use_dynamic_ntk and extrapolate:
            if past_len == 0:
                self._ntk_alpha = ntk_alpha(length, config.seq_length)
            alpha = self._ntk_alpha
        else:
            alpha = 1.0
        base = ntk_base(float(config.rotary_emb_base), alpha, self.rotary_dim)
        cos, sin = self.rotary.lookup(base, past_len, length, device, position_ids=position_ids)
        logn = None
        if config.use_logn_attn and extrapolate and past_len + length > config.seq_length:
            logn = logn_scale(past_len, length, config.seq_length, device=device)
        if attention_mask is not None:
            check_attention_mask(attention_mask, length, past_len)
        mask = create_causal_mask(
            config=config,
            inputs_embeds=hidden_states,
            attention_mask=attention_mask,
            # Packed samples are found from position_ids only without a cache (a training forward).
            cache=None if position_ids is not None and not past_len else cache,
            position_ids=position_ids,
        )
        # Flash kernels find the packed samples' boundaries from the positions.
        attn_kwargs = {} if position_ids is None else {"position_ids": position_ids}

        all_hidden: tuple[torch.Tensor, ...] = ()
        all_attn: tuple[torch.Tensor, ...] = ()
        for block in self.h:
            if output_hidden_states:
                all_hidden += (hidden_states,)
            hidden_states, weights = block(
                hidden_states,
                cos=cos,
                sin=sin,
                logn=logn,
                attention_mask=mask,
                cache=cache,
                output_attentions=output_attentions,
                **attn_kwargs,
            )
            if output_attentions:
                all_attn += (weights,)
        hidden_states = self.ln_f(hidden_states)
        if output_hidden_states:
            all_hidden += (hidden_states,)

        out = BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache,
            hidden_states=all_hidden if output_hidden_states else None,
            attentions=all_attn if output_attentions else None,
        )
        return out if return_dict else out.to_tuple()


def _pick_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    if past_key_values is not None:
        if cache is not None and cache is not past_key_values:
            raise ValueError("pass the KV cache as either `cache` or `past_key_values`, not both")
        cache = past_key_values
    if cache is not None and not isinstance(cache, Cache):
        raise TypeError(
            f"the KV cache must be a transformers Cache (e.g. DynamicCache), got {type(cache).__name__}"
        )
    return cache


class QwenVLForCausalLM(QwenVLPreTrainedModel, GenerationMixin):
    """Qwen-VL with its language-model head: what ``AutoModelForCausalLM`` returns for ``model_type: "qwen"``."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: QwenVLConfig) -> None:
        super().__init__(config)
        self.transformer = QwenVLModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        #: Labelled tokens per chunk of output logits in the loss (a runtime setting, not saved).
        self.loss_chunk_size = DEFAULT_CHUNK_SIZE
        #: "chunked" or "cce" (set by training from --loss_backend after probing; a runtime setting, not saved).
        self.loss_backend = "chunked"
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    # The original's chat API. The one place the model reaches up into the inference layer: imported when called
    # (the documented exception to the layering, tests/test_layering.py).
    def chat(
        self,
        tokenizer: Any,
        query: str,
        history: list[tuple[str, str | None]] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[str, list[tuple[str, str | None]]]:
        """Answer ``query`` after ``history``; returns ``(response, history)``: the original Qwen-VL-Chat API.

        The other arguments (``system``, ``append_history``, ``generation_config``, generation settings) are
        those of :func:`qwenvl_train.inference.chat.chat`.
        """
        from ..inference.chat import chat

        return chat(self, tokenizer, query, history, *args, **kwargs)

    def chat_stream(
        self,
        tokenizer: Any,
        query: str,
        history: list[tuple[str, str | None]] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Iterator[str]:
        """Like :meth:`chat`, yielding the response as it grows.

        See :func:`qwenvl_train.inference.chat.chat_stream`.
        """
        from ..inference.chat import chat_stream

        return chat_stream(self, tokenizer, query, history, *args, **kwargs)

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        return_logits: bool | None = None,
        image_features: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits and, given ``labels`` (-100 = ignored), the shifted next-token cross-entropy.

        ``pixel_values`` ``[n_images, 3, H, W]`` fill the ``<img>`` spans of ``input_ids`` in reading order;
        ``image_features`` (the vision tower's output for them, from the feature cache) may be given instead.
        ``num_items_in_batch`` (from the Trainer under gradient accumulation) turns the mean into sum / count;
        ``shift_labels`` may replace ``labels`` (targets already shifted).

        The loss is computed only at the positions whose next-token label is set, in chunks, never through the
        full logits (:mod:`.loss`). In training mode with labels the logits are therefore not computed at all
        (``logits`` is None) unless ``return_logits=True``; otherwise they are, as usual.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            image_features=image_features,
            cache=_pick_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            position_ids=kwargs.get("position_ids"),
        )
        hidden_states = outputs.last_hidden_state
        shift_labels = kwargs.get("shift_labels")
        loss = None
        if labels is not None or shift_labels is not None:
            loss = labelled_cross_entropy(
                hidden_states,
                self.lm_head,
                labels,
                shift_labels=shift_labels,
                num_items_in_batch=kwargs.get("num_items_in_batch"),
                chunk_size=self.loss_chunk_size,
                backend=self.loss_backend,
            )
        if return_logits is None:
            # A training step only needs the loss; the full logits cost [tokens, vocab] of compute and memory.
            return_logits = loss is None or not self.training
        logits = None
        if return_logits:
            if isinstance(logits_to_keep, int) and logits_to_keep > 0:
                hidden_states = hidden_states[:, -logits_to_keep:]
            elif isinstance(logits_to_keep, torch.Tensor):
                hidden_states = hidden_states[:, logits_to_keep]
            logits = self.lm_head(hidden_states)
        out = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return out if return_dict else out.to_tuple()

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: Cache | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Standard preparation, with ``pixel_values`` forwarded only while nothing is cached (the prefill)."""
        model_inputs = super().prepare_inputs_for_generation(input_ids, cache=cache, **kwargs)
        model_inputs.pop("pixel_values", None)
        if pixel_values is not None and (cache is None or cache.get_seq_length() == 0):
            model_inputs["pixel_values"] = pixel_values
        return model_inputs
