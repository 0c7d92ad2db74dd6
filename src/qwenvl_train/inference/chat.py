"""``model.chat`` and ``model.chat_stream``: the original Qwen-VL-Chat inference API on the native model.

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    query = tokenizer.from_list_format([{"image": "demo.jpeg"}, {"text": "What is this?"}])
    response, history = model.chat(tokenizer, query=query, history=None)
    response, history = model.chat(tokenizer, "Frame the dog", history=history)
    image = tokenizer.draw_bbox_on_latest_picture(response, history)

The prompt is the original's (:mod:`.prompt`); images named in the query or kept history are loaded by the data
pipeline's loader (relative paths against the current directory) and passed as ``pixel_values``. Generation
settings come from ``generation_config`` (default: the model's generation_config.json), overridden by keyword
arguments (``max_new_tokens=64``, ``do_sample=False``...); generation stops at ``<|im_end|>`` or
``<|im_start|>``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from ..format import tokens as st
from ..format.render import DEFAULT_MAX_WINDOW_SIZE, Context, History, make_context


class _IdQueue:
    """A transformers streamer handing the generated ids to another thread (the prompt is skipped)."""

    def __init__(self) -> None:
        self.queue: queue.Queue[list[int] | None | BaseException] = queue.Queue()
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.queue.put([int(v) for v in value.reshape(-1).tolist()])

    def end(self) -> None:
        self.queue.put(None)


def _chat_inputs(
    model: Any,
    tokenizer: Any,
    query: str,
    history: History | None,
    system: str,
    generation_config: Any,
    kwargs: dict[str, Any],
) -> tuple[Context, Any, Any]:
    from ..data.images import resolve_image
    from .generation import chat_generation_config, load_pixels

    max_window_size = kwargs.pop("max_window_size", None)
    config = chat_generation_config(model, generation_config, **kwargs)
    if max_window_size is None:
        max_window_size = getattr(config, "max_window_size", None) or DEFAULT_MAX_WINDOW_SIZE
    context = make_context(
        tokenizer, query, history, system, max_window_size, n_queries=model.config.n_queries
    )
    images = [resolve_image(ref, None) for ref in context.images]
    return context, config, load_pixels(images, model.config.image_size)


def chat(
    model: Any,
    tokenizer: Any,
    query: str,
    history: History | None = None,
    system: str = st.DEFAULT_SYSTEM_PROMPT,
    append_history: bool = True,
    generation_config: Any | None = None,
    **kwargs: Any,
) -> tuple[str, list[tuple[str, str | None]]]:
    """Answer ``query`` after ``history``; returns ``(response, history)``. ``model.chat`` calls this.

    Args:
        model: a ``QwenVLForCausalLM``.
        tokenizer: the model's tokenizer.
        query: the question; may hold ``<img>path-or-url</img>`` (see ``tokenizer.from_list_format``).
        history: earlier ``(query, response)`` pairs, oldest first (not modified).
        system: the system prompt.
        append_history: add ``(query, response)`` to the returned history (a new list).
        generation_config: default ``model.generation_config``; must say ``chat_format: chatml``.
        **kwargs: ``max_window_size`` and generation settings overriding the config.

    Returns:
        The response text (tags such as ``<ref>``/``<box>`` kept) and the history.
    """
    from .generation import decode_answer, generate

    context, config, pixels = _chat_inputs(
        model, tokenizer, query, history, system, generation_config, kwargs
    )
    (ids,) = generate(model, [context.input_ids], pixels, config)
    response = decode_answer(tokenizer, ids)
    history = list(history or [])
    if append_history:
        history.append((query, response))
    return response, history


def chat_stream(
    model: Any,
    tokenizer: Any,
    query: str,
    history: History | None = None,
    system: str = st.DEFAULT_SYSTEM_PROMPT,
    generation_config: Any | None = None,
    **kwargs: Any,
) -> Iterator[str]:
    """Like :func:`chat`, but yields the response as it grows; the last text yielded is ``chat``'s response.
    ``model.chat_stream`` calls this.

    Each text yielded starts with the one before. A text is held back while it ends in an incomplete
    UTF-8 character. Unlike the original (which skipped them), tags such as ``<box>`` stay in the text.
    """
    from .generation import answer_ids, decode_answer, generate

    context, config, pixels = _chat_inputs(
        model, tokenizer, query, history, system, generation_config, kwargs
    )
    streamer = _IdQueue()

    def run() -> None:
        try:
            generate(model, [context.input_ids], pixels, config, streamer=streamer)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread
            streamer.queue.put(exc)
            return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    generated: list[int] = []
    shown = ""
    done = False
    while not done:
        item = streamer.queue.get()
        if isinstance(item, BaseException):
            thread.join()
            raise item
        if item is None:
            break
        generated += item
        ids = answer_ids(generated)
        done = len(ids) < len(generated)  # a stop id arrived
        text = decode_answer(tokenizer, ids)
        if text != shown and not text.endswith("\ufffd"):
            shown = text
            yield text
    thread.join()
    final = decode_answer(tokenizer, answer_ids(generated))
    if final != shown:
        yield final
