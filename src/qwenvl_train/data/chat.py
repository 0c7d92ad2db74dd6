"""Render a conversation as ChatML: input ids and labels built together, in one pass.

Layout (the spec's chat format; ``nl`` is the id of "\\n", 198)::

    <|im_start|>system\\n{system}<|im_end|>\\n
    <|im_start|>user\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n{answer}<|im_end|>\\n
    ...

Every image ``<img>PATH</img>`` becomes ``<img>`` + n_queries x ``<imgpad>`` + ``</img>``; the model
overwrites the ``<imgpad>`` embeddings with the image features, so the ids there are placeholders.

Two label policies (a label is the token's own id where trained, ``IGNORE_INDEX`` elsewhere; the model
shifts them):

``assistant`` (default)
    Train on the content of every assistant turn and the ``<|im_end|>`` closing it; nothing else. Image
    spans are never trained, even inside an assistant turn (Qwen-VL cannot emit images).

``reference``
    Reproduce the original Qwen-VL ``finetune.py``: ``<|im_start|>``, ``<|im_end|>`` and the final "\\n"
    of every block are trained (system and user blocks included), plus the content of assistant turns
    (image spans there included, as the original did); the role name and its "\\n" are not; a first turn
    not from the user is dropped. Ids equal the original's everywhere except inside image spans (the
    original wrote the path's bytes there) and where a value holds a literal control-token string such
    as ``<|im_start|>``: the original made it a control id, we keep it as text (see ``markup``).
    Unlike the original, nothing is padded here: the collator pads per batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple, Protocol

from .. import special_tokens as st
from ..errors import UserError
from .markup import Image, MarkupError, ParsedValue, Special, Text, count_control_strings, parse_value

IGNORE_INDEX = -100
Policy = Literal["assistant", "reference"]
POLICIES: tuple[str, ...] = ("assistant", "reference")
ROLES: tuple[str, ...] = ("user", "assistant")


class TextEncoder(Protocol):
    """What rendering needs from a tokenizer: text -> ids with special strings as plain text."""

    def encode_text(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation.

    Attributes:
        role: ``"user"`` or ``"assistant"`` (aliases are resolved when reading).
        value: the text with its markup.
        index: position in the sample's ``conversations`` list (0-based), for error messages.
    """

    role: str
    value: str
    index: int


class CutPoint(NamedTuple):
    """The end of an assistant turn: a place where a sample may be cut."""

    length: int
    num_images: int
    num_turns: int


class RenderError(UserError, ValueError):
    """A conversation cannot be rendered; ``turn`` is the index of the offending turn (or None)."""

    def __init__(self, message: str, turn: int | None = None) -> None:
        super().__init__(message)
        self.turn = turn


@dataclass
class RenderedSample:
    """Ids, labels and the facts truncation and reporting need.

    Attributes:
        input_ids: the ChatML ids, no padding.
        labels: same length; ``IGNORE_INDEX`` where not trained.
        images: image references as written, in the order of their spans.
        image_turns: for each image, the index of the turn that names it.
        cut_points: a ``CutPoint`` at the end of every assistant turn: where the sample may be cut
            without splitting a span and still keep something to train on.
        num_turns: turns rendered (system block not counted).
        control_strings: literal control-token strings found in the values (kept as text).
        dropped_first_turn: ``reference`` policy dropped a leading non-user turn.
    """

    input_ids: list[int]
    labels: list[int]
    images: list[str]
    image_turns: list[int]
    cut_points: list[CutPoint]
    num_turns: int
    control_strings: Counter[str] = field(default_factory=Counter)
    dropped_first_turn: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    def cut(self, max_len: int) -> RenderedSample | None:
        """The longest prefix ending at an assistant turn's end with at most ``max_len`` ids, or None."""
        fitting = [cp for cp in self.cut_points if cp.length <= max_len]
        if not fitting:
            return None
        last = fitting[-1]
        return replace(
            self,
            input_ids=self.input_ids[: last.length],
            labels=self.labels[: last.length],
            images=self.images[: last.num_images],
            image_turns=self.image_turns[: last.num_images],
            cut_points=fitting,
            num_turns=last.num_turns,
        )


def render_conversation(
    turns: Sequence[Turn],
    tokenizer: TextEncoder,
    *,
    system: str | None = None,
    policy: Policy = "assistant",
    n_queries: int = 256,
    allow_bare_boxes: bool = False,
) -> RenderedSample:
    """Render one conversation into ids and labels (see the module docstring for the policies).

    Args:
        turns: user/assistant turns in order (the system turn goes to ``system``).
        tokenizer: anything with ``encode_text`` (``QwenVLTokenizer``).
        system: the system prompt; None means ``DEFAULT_SYSTEM_PROMPT``.
        policy: ``"assistant"`` or ``"reference"``.
        n_queries: positions per image (the resampler's query count, 256 for the real model).
        allow_bare_boxes: accept ``<box>`` outside a ref context.

    Raises:
        RenderError: bad markup (with the turn index), an unknown role or policy, or nothing to train on.
    """
    if policy not in POLICIES:
        raise RenderError(f"unknown label policy {policy!r} (choose from {', '.join(POLICIES)})")
    turns = list(turns)
    dropped = policy == "reference" and bool(turns) and turns[0].role != "user"
    if dropped:  # as the original finetune.py did
        turns = turns[1:]
    if not any(t.role == "assistant" for t in turns):
        raise RenderError(
            "no assistant turn to train on"
            + (" after dropping the first turn" if policy == "reference" else "")
        )
    for turn in turns:
        if turn.role not in ROLES:
            raise RenderError(f"unknown role {turn.role!r}", turn.index)
    parsed, errors = parse_turns(turns, allow_bare_boxes=allow_bare_boxes)
    if errors:
        raise errors[0]
    out = render_parsed(turns, parsed, tokenizer, system=system, policy=policy, n_queries=n_queries)
    out.dropped_first_turn = dropped
    return out


def parse_turns(
    turns: Sequence[Turn], *, allow_bare_boxes: bool = False
) -> tuple[list[ParsedValue | None], list[RenderError]]:
    """Parse the markup of every turn, collecting every error instead of stopping at the first.

    A box may open an assistant answer when the user turn before it holds a ``<ref>`` (see ``markup``); when
    that user turn's own markup is broken, the answer is given the benefit of the doubt so that one mistake
    is reported once.

    Returns:
        For each turn its parsed value (None where its markup is bad), and one error per bad turn.
    """
    parsed: list[ParsedValue | None] = []
    errors: list[RenderError] = []
    previous_user_has_ref = False
    for turn in turns:
        assistant = turn.role == "assistant"
        try:
            value = parse_value(
                turn.value,
                ref_context=assistant and previous_user_has_ref,
                allow_bare_boxes=allow_bare_boxes,
            )
        except MarkupError as exc:
            errors.append(RenderError(str(exc), turn.index))
            parsed.append(None)
            previous_user_has_ref = not assistant
            continue
        parsed.append(value)
        previous_user_has_ref = not assistant and value.has_ref
    return parsed, errors


def render_parsed(
    turns: Sequence[Turn],
    parsed: Sequence[ParsedValue],
    tokenizer: TextEncoder,
    *,
    system: str | None = None,
    policy: Policy = "assistant",
    n_queries: int = 256,
) -> RenderedSample:
    """Ids and labels of turns whose markup :func:`parse_turns` parsed without error (no checks here).

    Args:
        turns: user/assistant turns, in the order they are rendered (nothing is dropped here).
        parsed: their parsed values.
        tokenizer: anything with ``encode_text``.
        system: the system prompt; None means ``DEFAULT_SYSTEM_PROMPT``.
        policy: ``"assistant"`` or ``"reference"``.
        n_queries: positions per image.
    """
    ref = policy == "reference"
    enc = tokenizer.encode_text
    nl = enc("\n")
    system = st.DEFAULT_SYSTEM_PROMPT if system is None else system

    input_ids: list[int] = []
    labels: list[int] = []

    def add(ids: list[int], trained: bool) -> None:
        input_ids.extend(ids)
        labels.extend(ids if trained else [IGNORE_INDEX] * len(ids))

    out = RenderedSample(input_ids, labels, images=[], image_turns=[], cut_points=[], num_turns=0)
    count_control_strings(system, into=out.control_strings)

    add([st.IM_START_ID], ref)
    add(enc("system") + nl, False)
    add(enc(system), False)
    add([st.IM_END_ID], ref)
    add(nl, ref)

    span = [st.IMG_START_ID] + [st.IMG_PAD_ID] * n_queries + [st.IMG_END_ID]
    for turn, value in zip(turns, parsed, strict=True):
        assistant = turn.role == "assistant"
        if value.control_strings:
            out.control_strings.update(value.control_strings)
        add([st.IM_START_ID], ref)
        add(enc(turn.role) + nl, False)
        for seg in value.segments:
            if isinstance(seg, Text):
                add(enc(seg.text), assistant)
            elif isinstance(seg, Special):
                add([seg.token_id], assistant)
            elif isinstance(seg, Image):
                add(span, assistant and ref)
                out.images.append(seg.path)
                out.image_turns.append(turn.index)
        add([st.IM_END_ID], assistant or ref)
        add(nl, ref)
        out.num_turns += 1
        if assistant:
            out.cut_points.append(CutPoint(len(input_ids), len(out.images), out.num_turns))
    return out
