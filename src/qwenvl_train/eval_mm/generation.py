"""Ask a batch of benchmark questions exactly as the original ``eval_mm/`` scripts ask them.

The prompt is the original string encoded as the original tokenizer encodes it, with no chat template
(:func:`prompt_ids`: ``<ref>``/``<box>`` become their special ids, each ``<img>path</img>`` the model's image span,
filled with the picture loaded by the training loader). Decoding (:func:`generate_texts`) is the original's
``model.generate`` call: greedy, the benchmark's ``max_new_tokens`` / ``min_new_tokens``, left padding with
pad = eos = ``<|endoftext|>``, stopping at ``<|endoftext|>`` only (``eos_token_id=eod_id``: a base model's
``<|im_end|>`` does not end its answer), the new tokens decoded with special tokens skipped, then ``.strip()``
where the original strips (grounding does not).

MME (:func:`chat_texts`) asks through ``model.chat``'s prompt (ChatML, default system prompt) with the chat
model's generation_config and ``top_p = 0.01``, as ``mme/eval.py`` sets it. The original asks one question at a
time; batched rows are left-padded like the rest, and ``batch_size=1`` is exactly ``model.chat``.

Left padding keeps a row's answer what it would be alone: the model takes RoPE positions from the cache length and
the mask hides the pads (see :mod:`qwenvl_train.inference.generation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..format import tokens as st
from ..format.render import encode_markup
from ..inference.generation import left_pad
from .catalog import Benchmark

#: The original's ``top_p`` for MME (``model.generation_config.top_p = 0.01``).
MME_TOP_P = 0.01


def prompt_ids(tokenizer: Any, prompt: str, n_queries: int) -> list[int]:
    """The ids of an original prompt string, as the original tokenizer gives them (image spans as placeholders)."""
    ids, _ = encode_markup(tokenizer, prompt, n_queries)
    return ids


def base_generation_config(bench: Benchmark) -> Any:
    """The original's decoding settings for ``bench``: greedy, its lengths, pad = eos = ``<|endoftext|>``."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=bench.max_new_tokens,
        min_new_tokens=bench.min_new_tokens,
        pad_token_id=st.ENDOFTEXT_ID,
        eos_token_id=st.ENDOFTEXT_ID,
        top_p=1.0,  # neutral sampling values: the checkpoint's (top_p 0.3, top_k 0) would only be warned about
        top_k=50,
        temperature=1.0,
    )


@torch.no_grad()
def generate_texts(
    model: Any,
    tokenizer: Any,
    bench: Benchmark,
    prompts: Sequence[Sequence[int]],
    pixel_values: torch.Tensor | None,
    generation_config: Any | None = None,
    synced_gpus: bool | None = None,
) -> list[str]:
    """The decoded answers of a batch of prompts, as the original decodes them.

    Args:
        model: a ``QwenVLForCausalLM`` in eval mode.
        tokenizer: its tokenizer.
        bench: the catalog entry (strip or not; lengths when ``generation_config`` is None).
        prompts: each row's prompt ids (:func:`prompt_ids`).
        pixel_values: every row's pictures, row by row, or None.
        generation_config: default :func:`base_generation_config`.
        synced_gpus: keep stepping until every rank is done (ZeRO-3/FSDP during training; None: transformers
            decides).
    """
    config = generation_config or base_generation_config(bench)
    device = model.device
    input_ids, attention_mask = left_pad(prompts, st.ENDOFTEXT_ID)
    kwargs: dict[str, Any] = {}
    if pixel_values is not None:
        kwargs["pixel_values"] = pixel_values.to(device=device, dtype=model.dtype)
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        generation_config=config,
        synced_gpus=synced_gpus,
        **kwargs,
    )
    texts = [
        tokenizer.decode(row, skip_special_tokens=True) for row in output[:, input_ids.shape[1] :].tolist()
    ]
    return [text.strip() for text in texts] if bench.strip else texts


@torch.no_grad()
def chat_texts(
    model: Any,
    tokenizer: Any,
    queries: Sequence[str],
    pixel_values: torch.Tensor | None,
    synced_gpus: bool | None = None,
) -> list[str]:
    """``model.chat(tokenizer, query, history=None)`` for each query, with ``top_p = 0.01`` (MME).

    Raises:
        GenerationSettingsError: the model's generation_config is not a chat model's.
    """
    from ..format.render import DEFAULT_MAX_WINDOW_SIZE, make_context
    from ..inference.generation import chat_generation_config, decode_answer, generate

    config = chat_generation_config(model, top_p=MME_TOP_P)
    window = getattr(config, "max_window_size", None) or DEFAULT_MAX_WINDOW_SIZE
    prompts = [
        make_context(
            tokenizer, query, None, st.DEFAULT_SYSTEM_PROMPT, window, model.config.n_queries
        ).input_ids
        for query in queries
    ]
    if pixel_values is not None:
        pixel_values = pixel_values.to(dtype=model.dtype)
    return [
        decode_answer(tokenizer, ids)
        for ids in generate(model, prompts, pixel_values, config, None, synced_gpus)
    ]
