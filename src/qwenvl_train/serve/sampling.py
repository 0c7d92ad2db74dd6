"""The next token of one row: greedy, or sampled with temperature, top-k, top-p and a seed of its own.

A request's settings override the model's ``generation_config.json`` (read through
:func:`qwenvl_train.inference.generation.chat_generation_config`): ``temperature`` 0 is greedy, a request
without ``temperature`` decodes as the config says (Qwen-VL-Chat: sampling with top-p 0.3). The padding rows of
the output layer are never picked (see :func:`~qwenvl_train.inference.generation.undecodable_ids`); a
``repetition_penalty`` in the config applies as in transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Sampling:
    """How one row picks its tokens."""

    greedy: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    generator: torch.Generator | None = None


def settings(config: Any, temperature: float | None, top_p: float | None, seed: int | None) -> Sampling:
    """A request's sampling over the model's chat generation config."""
    do_sample = bool(config.do_sample)
    if temperature is not None:
        do_sample = temperature > 0
    if not do_sample:
        return Sampling(greedy=True, repetition_penalty=float(config.repetition_penalty or 1.0))
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(seed % (1 << 64))
    return Sampling(
        greedy=False,
        temperature=float(temperature if temperature is not None else config.temperature or 1.0),
        top_p=float(top_p if top_p is not None else config.top_p if config.top_p is not None else 1.0),
        top_k=int(config.top_k or 0),
        repetition_penalty=float(config.repetition_penalty or 1.0),
        generator=generator,
    )


def pick(logits: torch.Tensor, sampling: Sampling, seen: Sequence[int]) -> int:
    """The next token from one row's ``logits`` ``[vocab]`` (float32; padding rows already at -inf).

    Args:
        seen: the ids so far (prompt and answer), for the repetition penalty.
    """
    if sampling.repetition_penalty != 1.0 and seen:
        ids = torch.as_tensor(sorted(set(seen)), dtype=torch.long)
        scores = logits[ids]
        penalty = sampling.repetition_penalty
        logits = logits.clone()
        logits[ids] = torch.where(scores < 0, scores * penalty, scores / penalty)
    if sampling.greedy:
        return int(torch.argmax(logits))
    logits = logits / max(sampling.temperature, 1e-5)
    if sampling.top_k > 0:
        kth = torch.topk(logits, min(sampling.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of the tokens ranked above
        sorted_probs = sorted_probs.masked_fill(before >= sampling.top_p, 0.0)
        sorted_probs[0] = sorted_probs[0].clamp_min(1e-12)  # the most likely token always stays
        choice = torch.multinomial(sorted_probs, 1, generator=sampling.generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=sampling.generator))
