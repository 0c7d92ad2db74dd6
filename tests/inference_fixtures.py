"""Helpers for the tests/test_inference_*.py files (imported by them; not collected itself)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from qwenvl_train.format import tokens as st


def write_image(
    path: Path, size: tuple[int, int] = (80, 60), colour: tuple[int, int, int] = (255, 255, 255)
) -> Path:
    """A plain RGB PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def scripted_generate(
    tokenizer: Any, answer_for: Callable[[str], str], calls: list[dict] | None = None
) -> Callable:
    """A stand-in for ``model.generate``: each row's answer is ``answer_for(decoded prompt)``, then ``<|im_end|>``.

    Rows are right-aligned prompts (left padding); the answers are padded with ``<|endoftext|>`` like generate's
    finished rows. A streamer gets the prompt, then the new tokens one step at a time, as from generate. Each call's
    keyword arguments are appended to ``calls``. Install on the class with :func:`patch_generate`.
    """

    def generate(
        input_ids: torch.Tensor, attention_mask: torch.Tensor, streamer: Any = None, **kwargs: Any
    ) -> torch.Tensor:
        if calls is not None:
            calls.append({"input_ids": input_ids, "attention_mask": attention_mask, **kwargs})
        answers = []
        for row, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            prompt = tokenizer.decode([t for t, m in zip(row, mask, strict=True) if m])
            answers.append(tokenizer.encode(answer_for(prompt)) + [st.IM_END_ID])
        longest = max(len(a) for a in answers)
        new = torch.tensor([a + [st.ENDOFTEXT_ID] * (longest - len(a)) for a in answers], dtype=torch.long)
        if streamer is not None:
            streamer.put(input_ids)
            for step in range(new.shape[1]):
                streamer.put(new[:, step])
            streamer.end()
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)

    return generate


def patch_generate(monkeypatch: Any, generate: Callable) -> None:
    """Make every ``QwenVLForCausalLM.generate`` call ``generate`` (keyword arguments only, as the product calls it)."""
    from qwenvl_train.model.modeling import QwenVLForCausalLM

    monkeypatch.setattr(QwenVLForCausalLM, "generate", lambda self, **kwargs: generate(**kwargs))


def last_question(prompt: str) -> str:
    """The text of the last user block of a decoded ChatML prompt."""
    return prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
