"""Server-sent events for ``stream: true``: ``chat.completion.chunk`` objects, then ``data: [DONE]``.

The chunks of one answer: the role first (``delta: {"role": "assistant", "content": ""}``), then the text as it
is generated, then an empty delta with ``finish_reason`` and the ``boxes`` extension field, then (when the
request asked ``stream_options.include_usage``) a chunk with ``usage`` and no choices, as OpenAI sends them. A
failure after the stream started is sent as ``data: {"error": {...}}`` before ``[DONE]``.
"""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> bytes:
    """One event carrying ``data`` as JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def chunk(
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` with one choice."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(completion_id: str, created: int, model: str, usage: dict[str, int]) -> dict[str, Any]:
    """The last chunk when usage was asked for: no choices, the token counts."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage,
    }
