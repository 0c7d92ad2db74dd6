"""The chat prompt of the original ``model.chat`` (its ``make_context``, chatml), as ids plus the images it names.

    <|im_start|>system\\n{system}<|im_end|>
    \\n<|im_start|>user\\n{q1}<|im_end|>\\n<|im_start|>assistant\\n{r1}<|im_end|>     one block per history pair
    \\n<|im_start|>user\\n{query}<|im_end|>\\n<|im_start|>assistant\\n

History pairs are added from the newest backwards while ``len(system) + len(pair) + len(kept) <
max_window_size``; the first pair that does not fit ends the walk, and older pairs are dropped (the query's own
block is not counted). Each ``<img>PATH</img>`` becomes ``<img>`` + ``n_queries`` x ``<imgpad>`` + ``</img>``
(the original wrote the path's bytes there; the model overwrites those positions, so the logits are the same)
and PATH joins :attr:`Context.images`.

Text is encoded as the original tokenizer did it for chat: the ``<ref>``, ``<box>``, ``<quad>`` tags (opening
and closing) become their special ids wherever they stand, balanced or not, and each text piece between tags is
NFC-normalised and BPE-encoded on its own. As in training, other special-token strings (``<|im_start|>``,
``<imgpad>``...) in a query stay plain text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import special_tokens as st
from ..data.chat import TextEncoder
from ..data.markup import TAG_RE
from ..errors import UserError

DEFAULT_MAX_WINDOW_SIZE = 6144
History = Sequence[tuple[str, str | None]]


class PromptError(UserError, ValueError):
    """A query cannot be turned into a prompt (an ``<img>`` never closed, a stray ``</img>``); one line."""


@dataclass
class Context:
    """A chat prompt.

    Attributes:
        input_ids: the ids, ending with ``<|im_start|>assistant\\n``.
        images: the image references in the order of their spans, exactly as written.
        kept_pairs: how many of the newest history pairs fit in ``max_window_size``.
    """

    input_ids: list[int]
    images: list[str] = field(default_factory=list)
    kept_pairs: int = 0


def encode_markup(tokenizer: TextEncoder, text: str, n_queries: int) -> tuple[list[int], list[str]]:
    """Encode a query or response: ids, and the images it names in order (see the module docstring).

    Raises:
        PromptError: an ``<img>`` without ``</img>``, or a ``</img>`` without ``<img>``.
    """
    ids: list[int] = []
    images: list[str] = []
    pos = 0
    while (m := TAG_RE.search(text, pos)) is not None:
        if m.start() > pos:
            ids += tokenizer.encode_text(text[pos : m.start()])
        tag = m.group(0)
        pos = m.end()
        if tag == st.IMG_START:
            end = text.find(st.IMG_END, pos)
            if end < 0:
                raise PromptError(f"<img> at character {m.start()} is never closed by </img>: {text!r}")
            images.append(text[pos:end])
            ids += [st.IMG_START_ID] + [st.IMG_PAD_ID] * n_queries + [st.IMG_END_ID]
            pos = end + len(st.IMG_END)
        elif tag == st.IMG_END:
            raise PromptError(f"</img> at character {m.start()} without an opening <img>: {text!r}")
        else:
            ids.append(st.SPECIAL_IDS[tag])
    if pos < len(text):
        ids += tokenizer.encode_text(text[pos:])
    return ids, images


def make_context(
    tokenizer: TextEncoder,
    query: str,
    history: History | None = None,
    system: str = st.DEFAULT_SYSTEM_PROMPT,
    max_window_size: int = DEFAULT_MAX_WINDOW_SIZE,
    n_queries: int = 256,
) -> Context:
    """The prompt for the answer to ``query`` after ``history`` (``(query, response)`` pairs, oldest first).

    A pair whose response is None adds its user block and the "\\n" after it, as in the original.

    Raises:
        PromptError: bad image markup in the query or a kept history pair.
    """
    enc = tokenizer.encode_text
    nl = enc("\n")

    def block(role: str, content: str) -> tuple[list[int], list[str]]:
        ids, images = encode_markup(tokenizer, content, n_queries)
        return [st.IM_START_ID] + enc(role) + nl + ids + [st.IM_END_ID], images

    system_ids, _ = block("system", system)
    kept: list[int] = []
    kept_images: list[str] = []
    kept_pairs = 0
    for turn_query, turn_response in reversed(list(history or [])):
        user_ids, pair_images = block("user", turn_query)
        pair = nl + user_ids + nl
        if turn_response is not None:
            response_ids, response_images = block("assistant", turn_response)
            pair += response_ids
            pair_images += response_images
        if len(system_ids) + len(pair) + len(kept) >= max_window_size:
            break
        kept, kept_images, kept_pairs = pair + kept, pair_images + kept_images, kept_pairs + 1

    query_ids, query_images = block("user", query)
    assistant = [st.IM_START_ID] + enc("assistant") + nl
    input_ids = system_ids + kept + nl + query_ids + nl + assistant
    return Context(input_ids, kept_images + query_images, kept_pairs)
