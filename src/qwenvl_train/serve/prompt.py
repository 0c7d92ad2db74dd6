"""Checked messages -> the prompt ids, rendered exactly as training renders a conversation.

Each user message becomes a query as ``tokenizer.from_list_format`` writes it, its parts in order: an image is
``Picture k: <img>..</img>\\n`` with ``k`` counted over the whole conversation (the second picture of a chat is
``Picture 2`` even when it comes in a later message, as in the training data), text is kept as written.
The system message is the system prompt (default: the model's usual one); earlier user / assistant pairs are
the history. :func:`qwenvl_train.format.make_context` renders them (the original ``model.chat`` prompt), so a
served model reads what it was trained on; the oldest pairs are left out when the conversation is longer than
the window, as ``model.chat`` does.

Pictures travel apart from the text: inside the ``<img>`` tag stands the picture's number, and the decoded
images are matched to the spans the prompt kept. Text parts may hold ``<ref>`` / ``<box>`` markup (a grounding
question), but never an ``<img>`` tag: a picture comes only as an ``image_url`` part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..format import tokens as st
from ..format.markup import Image, PromptError, image_markup, read_prompt
from ..format.render import DEFAULT_MAX_WINDOW_SIZE, make_context
from .schema import APIError, ChatRequest, Part


@dataclass
class Prompt:
    """A rendered request.

    Attributes:
        input_ids: the prompt ids, ending with the assistant's opening.
        pictures: the numbers (1-based) of the pictures the prompt kept, in the order of their spans.
        image_parts: the ``image_url`` part of each picture number (index k - 1).
        latest_picture: the number of the last picture of the conversation, or None (what boxes refer to).
    """

    input_ids: list[int]
    pictures: list[int]
    image_parts: list[Part]
    latest_picture: int | None


def picture(number: int) -> str:
    """The text standing for a picture in a query (``tokenizer.from_list_format``'s, numbered over the chat)."""
    return image_markup(number, str(number))


def _text(part: Part) -> str:
    try:
        segments = read_prompt(part.value)
    except PromptError as exc:
        raise APIError(f"'{part.param}': {exc}", param=part.param, code="invalid_markup") from None
    if any(isinstance(segment, Image) for segment in segments):
        raise APIError(
            f"'{part.param}': image markup in text is not accepted; send pictures as image_url parts",
            param=part.param,
            code="invalid_markup",
        )
    return part.value


def render(request: ChatRequest, tokenizer: Any, n_queries: int, max_window_size: int | None) -> Prompt:
    """The prompt of ``request`` (see the module docstring).

    Raises:
        APIError: markup that is not accepted in a text part; the prompt does not fit the window.
    """
    window = max_window_size or DEFAULT_MAX_WINDOW_SIZE
    messages = request.messages
    system = messages[0].text if messages[0].role == "system" else st.DEFAULT_SYSTEM_PROMPT
    turns = messages[1:] if messages[0].role == "system" else messages
    image_parts: list[Part] = []
    texts: list[str] = []
    for message in turns:
        text = ""
        for part in message.parts:
            if part.kind == "image":
                image_parts.append(part)
                text += picture(len(image_parts))
            else:
                text += _text(part)
        texts.append(text)
    history = [(texts[i], texts[i + 1]) for i in range(0, len(texts) - 1, 2)]
    try:
        context = make_context(tokenizer, texts[-1], history, system, window, n_queries=n_queries)
    except PromptError as exc:  # cannot happen after _text, but never a 500
        raise APIError(str(exc), param="messages", code="invalid_markup") from None
    if len(context.input_ids) >= window:
        raise APIError(
            f"the prompt is {len(context.input_ids)} tokens long, the model's window is {window}: shorten the "
            "last message or send fewer pictures",
            param="messages",
            code="context_length_exceeded",
        )
    pictures = [int(ref) for ref in context.images]
    return Prompt(context.input_ids, pictures, image_parts, len(image_parts) or None)
