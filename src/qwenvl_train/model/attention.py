"""Language-model attention kernels, picked through transformers' attention-function registry.

``config._attn_implementation`` selects the kernel as for any native transformers model: ``"eager"`` runs
:func:`eager_attention_forward` below (the original remote code's order of operations, bit for bit), every other
name (``"sdpa"``, ``"flex_attention"``, ``"flash_attention_2"``/``"_3"``, a hub kernel) is looked up in
``ALL_ATTENTION_FUNCTIONS``. Masks come from :func:`transformers.masking_utils.create_causal_mask`, so each kernel
gets the mask it expects (additive float for eager, boolean or ``None`` for SDPA, a ``BlockMask`` for flex, a 2D
padding mask or ``None`` plus ``position_ids`` for flash), including the block-diagonal mask of packed sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def causal_additive_mask(q_len: int, kv_len: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[1, 1, q_len, kv_len]`` with 0 where query ``i`` (at position ``kv_len - q_len + i``) may attend, else the
    dtype's minimum."""
    past = kv_len - q_len
    allowed = (
        torch.arange(kv_len, device=device)[None, :] <= torch.arange(past, kv_len, device=device)[:, None]
    )
    mask = torch.zeros(q_len, kv_len, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's order: matmul, divide by ``sqrt(head_dim)``, add the mask, softmax in the working dtype.

    ``query``/``key``/``value`` are ``[B, H, L, D]``; returns ``([B, L, H, D], weights [B, H, L, kv])``.
    ``scaling`` is accepted for the registry's signature but the division by ``sqrt(head_dim)`` is what the
    original does (it is not always bit-identical to a multiplication). The mask may be additive (as
    ``create_causal_mask`` builds it for eager), boolean (as built for SDPA, when attention weights are asked for
    under SDPA) or ``None`` (a plain causal mask, lower-right aligned to the keys).
    """
    q_len, kv_len = query.shape[2], key.shape[2]
    if attention_mask is None and q_len > 1:
        attention_mask = causal_additive_mask(q_len, kv_len, query.dtype, query.device)
    elif attention_mask is not None and attention_mask.dtype == torch.bool:
        zero = torch.zeros((), dtype=query.dtype, device=query.device)
        attention_mask = torch.where(attention_mask, zero, torch.finfo(query.dtype).min)
    scores = torch.matmul(query, key.transpose(-1, -2))
    scores = scores / torch.full([], value.shape[-1] ** 0.5, dtype=scores.dtype, device=scores.device)
    if attention_mask is not None:
        scores = scores + attention_mask[..., :kv_len]
    weights = F.dropout(scores.softmax(dim=-1).type(value.dtype), p=dropout, training=module.training)
    out = torch.matmul(weights, value)
    return out.transpose(1, 2).contiguous(), weights


def attention_interface(implementation: str, output_attentions: bool = False) -> Callable[..., Any]:
    """The attention function for ``config._attn_implementation``.

    Attention weights exist only in eager attention, so ``output_attentions`` runs the eager kernel when the
    model's masks suit it (eager or SDPA masks); other kernels return no weights.
    """
    if output_attentions and implementation == "sdpa":
        return eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
