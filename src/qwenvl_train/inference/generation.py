"""Generation shared by chat and evaluation: settings, left-padded batches, the answer cut at a stop token.

A batch is padded on the LEFT, so every prompt ends where generation starts. The model takes RoPE positions
from the cache length (``position_ids`` are ignored, as in the original): a row with ``p`` pads has its real
tokens at positions ``p, p + 1, ...`` instead of ``0, 1, ...``. RoPE scores depend only on the distance
between two positions and the mask hides the pads, so each row computes what it would alone (up to float
rounding), as long as the padded length stays below ``seq_length`` (beyond it dynamic NTK and logn scaling,
which depend on absolute lengths, start to differ).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import UserError
from ..format import tokens as st

#: Generation ends at the first of these; the answer is what comes before it.
STOP_IDS: tuple[int, ...] = (st.IM_END_ID, st.IM_START_ID, st.ENDOFTEXT_ID)


class GenerationSettingsError(UserError, ValueError):
    """The generation config cannot be used for chat (not chatml); one line."""


def chat_generation_config(model: Any, generation_config: Any | None = None, **overrides: Any) -> Any:
    """A copy of ``generation_config`` (default: the model's, i.e. generation_config.json) with ``overrides``
    applied (``chat_format`` among them), stopping on ``<|im_end|>``, ``<|im_start|>`` and ``<|endoftext|>``.

    Raises:
        GenerationSettingsError: ``chat_format`` is not ``chatml`` (a base model, not a chat model).
    """
    config = copy.deepcopy(generation_config if generation_config is not None else model.generation_config)
    if "chat_format" in overrides:  # not a transformers setting: absent from a config that never had it
        config.chat_format = overrides.pop("chat_format")
    unknown = config.update(**overrides)
    if unknown:
        raise GenerationSettingsError(f"unknown generation setting(s): {', '.join(sorted(unknown))}")
    chat_format = getattr(config, "chat_format", None)
    if chat_format != "chatml":
        raise GenerationSettingsError(
            f"chat needs a chat model (generation_config chat_format 'chatml'), this one has {chat_format!r}: "
            'use a Qwen-VL-Chat checkpoint, or a model fine-tuned on conversations with "chat_format": '
            '"chatml" in its generation_config.json'
        )
    eos = config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    config.eos_token_id = eos + [i for i in STOP_IDS if i not in eos]
    if config.pad_token_id is None:
        config.pad_token_id = st.PAD_ID
    padding_rows = undecodable_ids(model)
    if padding_rows:
        kept = [i for i in (config.suppress_tokens or []) if i not in padding_rows]
        config.suppress_tokens = kept + padding_rows
    if not config.do_sample:  # greedy: neutral sampling settings, so transformers does not warn about them
        config.top_p, config.top_k, config.temperature = 1.0, 50, 1.0
    return config


def undecodable_ids(model: Any) -> list[int]:
    """The output layer's padding rows: ids past the tokenizer's last token (151,936 rows for 151,860 tokens).

    A trained model never picks them, but an untrained or barely trained one can, and the tokenizer cannot decode
    them; generation suppresses them, so such a model answers with real tokens instead of failing at decode.
    """
    rows = getattr(getattr(model, "config", None), "vocab_size", None)
    first = st.NUM_BPE_RANKS + len(st.SPECIAL_TOKENS)
    return list(range(first, rows)) if isinstance(rows, int) else []


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of ``rows`` padded on the left to the longest."""
    longest = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, longest - len(row) :] = torch.as_tensor(row, dtype=torch.long)
            attention_mask[i, longest - len(row) :] = 1
    return input_ids, attention_mask


def load_pixels(images: Sequence[str], image_size: int) -> torch.Tensor | None:
    """The images (resolved paths or URLs) as ``pixel_values``, through the training data loader."""
    if not images:
        return None
    from ..data.images import image_tensor

    return torch.stack([image_tensor(ref, image_size) for ref in images])


def answer_ids(new_ids: Sequence[int]) -> list[int]:
    """The generated ids up to (not including) the first stop id."""
    out: list[int] = []
    for token in new_ids:
        if token in STOP_IDS:
            break
        out.append(int(token))
    return out


def decode_answer(tokenizer: Any, ids: Sequence[int]) -> str:
    """The answer text: special tags (``<ref>``, ``<box>``...) kept, outer whitespace stripped (as the original)."""
    return tokenizer.decode(list(ids), errors="replace").strip()


@torch.no_grad()
def generate(
    model: Any,
    prompts: Sequence[Sequence[int]],
    pixel_values: torch.Tensor | None,
    generation_config: Any,
    streamer: Any | None = None,
    synced_gpus: bool | None = None,
) -> list[list[int]]:
    """Generate for a batch of prompts; returns each row's answer ids (cut at the first stop id).

    Args:
        model: a ``QwenVLForCausalLM`` (adapters may be injected in it).
        prompts: the prompt ids of each row.
        pixel_values: the images of all rows, row by row in reading order, or None.
        generation_config: from :func:`chat_generation_config`.
        streamer: a transformers streamer (one row only).
        synced_gpus: keep stepping until every rank is done (None: transformers decides, ZeRO-3/FSDP).
    """
    device = model.device
    input_ids, attention_mask = left_pad(prompts, generation_config.pad_token_id)
    kwargs: dict[str, Any] = {}
    if pixel_values is not None:
        kwargs["pixel_values"] = pixel_values.to(device)
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        generation_config=generation_config,
        streamer=streamer,
        synced_gpus=synced_gpus,
        **kwargs,
    )
    new = output[:, input_ids.shape[1] :].tolist()
    return [answer_ids(row) for row in new]
