"""Multiple choice as ``evaluate_multiple_choice.py`` (ScienceQA) and ``seed_bench/eval.py`` score it: no generation.

For each option letter, the row ``prompt + tokens(' ' + letter)`` is run through the model; the option's loss is
the cross-entropy of its target tokens (the tokens of ``' ' + letter``) after the prompt, averaged over those
tokens; the answer is the option with the lowest loss (the first on a tie, as ``argmin``).

All options of all questions of a batch go through one forward, left-padded with ``<|endoftext|>``. Only the
logits of the last positions (those predicting a target token) are computed, and each picture goes through the
vision tower once per question, its features shared by the question's option rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..format import tokens as st
from ..inference.generation import left_pad


def option_targets(tokenizer: Any, letters: Sequence[str]) -> list[list[int]]:
    """The target ids of each option: ``' ' + letter`` as the original tokenizes it."""
    return [tokenizer.encode_text(" " + letter) for letter in letters]


@torch.no_grad()
def option_losses(
    model: Any,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[Sequence[int]]],
    pixel_values: torch.Tensor | None,
    images_per_prompt: Sequence[int],
) -> list[list[float]]:
    """The mean target loss of every option of every prompt.

    Args:
        model: a ``QwenVLForCausalLM`` in eval mode.
        prompts: each question's prompt ids.
        targets: each question's options, as target ids (:func:`option_targets`).
        pixel_values: the questions' pictures in order (``images_per_prompt[q]`` for question ``q``), or None.
        images_per_prompt: how many pictures each question's prompt holds.

    Returns:
        ``losses[q][k]``: option ``k`` of question ``q``.
    """
    rows: list[list[int]] = []
    row_images: list[int] = []  # for each row's picture spans, the index of the picture
    first_image = 0
    for prompt, options, n_images in zip(prompts, targets, images_per_prompt, strict=True):
        for target in options:
            rows.append(list(prompt) + list(target))
            row_images += range(first_image, first_image + n_images)
        first_image += n_images
    input_ids, attention_mask = left_pad(rows, st.ENDOFTEXT_ID)
    device = model.device
    image_features = None
    if pixel_values is not None and row_images:
        features = model.transformer.visual(pixel_values.to(device=device, dtype=model.dtype))
        image_features = features[torch.as_tensor(row_images, device=device)]
    longest = max(len(t) for options in targets for t in options)
    logits = model(
        input_ids=input_ids[:, :-1].to(device),
        attention_mask=attention_mask[:, :-1].to(device),
        image_features=image_features,
        logits_to_keep=longest,
        return_dict=True,
    ).logits.float()
    losses: list[list[float]] = []
    row = 0
    for options in targets:
        mine = []
        for target in options:
            n = len(target)
            predicted = logits[row, logits.shape[1] - n :]
            mine.append(float(F.cross_entropy(predicted, torch.as_tensor(target, device=device))))
            row += 1
        losses.append(mine)
    return losses


def choose(losses: Sequence[float]) -> int:
    """The index of the lowest loss (the first of equal ones)."""
    return min(range(len(losses)), key=lambda k: (losses[k], k))
