"""ChatML rendering: one renderer, two entry points sharing the image span and the turn blocks.

Every block is ``<|im_start|>`` + role + "\\n" + content + ``<|im_end|>``, and every image ``<img>PATH</img>`` of
the content becomes ``<img>`` + n_queries x ``<imgpad>`` + ``</img>`` (:func:`image_span`; the model overwrites the
``<imgpad>`` embeddings with the image features, so the ids there are placeholders, and PATH is listed apart).
:class:`ChatML` writes a block as its parts (``im_start``, ``role``, ``text``, ``image``, ``im_end``), so that
each entry point decides what to do with them:

Training (:func:`render_conversation`, :func:`render_parsed`): ids and the trained mask built together, in one
pass, each part of a block added with its flag (``nl`` is the id of "\\n", 198)::

    <|im_start|>system\\n{system}<|im_end|>\\n
    <|im_start|>user\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n{answer}<|im_end|>\\n
    ...

The mask is carried as it is (through the scan and its columns) to the one place that makes labels of it, the
training dataset's ``__getitem__`` (a label is the token's own id where trained, ``IGNORE_INDEX`` elsewhere; the
model shifts them). Two label policies:

``assistant`` (default)
    Train on the content of every assistant turn and the ``<|im_end|>`` closing it; nothing else. Image
    spans are never trained, even inside an assistant turn (Qwen-VL cannot emit images).

``reference``
    Reproduce the original Qwen-VL ``finetune.py``: ``<|im_start|>``, ``<|im_end|>`` and the final "\\n"
    of every block are trained (system and user blocks included), plus the content of assistant turns
    (image spans there included, as the original did); the role name and its "\\n" are not; a first turn
    not from the user is dropped. Ids equal the original's everywhere except inside image spans (the
    original wrote the path's bytes there) and where a value holds a literal control-token string such
    as ``<|im_start|>``: the original made it a control id, we keep it as text (see :mod:`.markup`).
    Unlike the original, nothing is padded here: the collator pads per batch.

Under either policy an assistant turn marked untrained (:attr:`.sample.Turn.trained` False: ``"train": false`` in
the data, what OpenAI's fine-tuning files write ``"weight": 0``) is context only: its ids are rendered as usual
and none of its block, the "\n" after it included, is trained; no cut point is placed at its end.

Prompts (:func:`make_context`, the original ``model.chat``'s ``make_context``, chatml): ids plus the images they
name::

    <|im_start|>system\\n{system}<|im_end|>
    \\n<|im_start|>user\\n{q1}<|im_end|>\\n<|im_start|>assistant\\n{r1}<|im_end|>     one block per history pair
    \\n<|im_start|>user\\n{query}<|im_end|>\\n<|im_start|>assistant\\n

History pairs are added from the newest backwards while ``len(system) + len(pair) + len(kept) <
max_window_size``; the first pair that does not fit ends the walk, and older pairs are dropped (the query's own
block is not counted). Text is read as the original tokenizer read it for chat (:func:`.markup.read_prompt`):
the ``<ref>``, ``<box>``, ``<quad>`` tags (opening and closing) become their special ids wherever they stand,
balanced or not, and each text piece between tags is NFC-normalised and BPE-encoded on its own. As in training,
other special-token strings (``<|im_start|>``, ``<imgpad>``...) in a query stay plain text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple, Protocol

from ..errors import UserError
from . import tokens as st
from .markup import (
    Image,
    MarkupError,
    ParsedValue,
    Segment,
    Special,
    Text,
    count_control_strings,
    parse_value,
    read_prompt,
)
from .rules import POLICIES, UNTRAINED, Policy, drops_first_turn, has_assistant, has_trained
from .sample import ROLES, Turn

#: The label of a token that is not trained (what the loss ignores); defined here only.
IGNORE_INDEX = -100
DEFAULT_MAX_WINDOW_SIZE = 6144
History = Sequence[tuple[str, str | None]]
Part = Literal["im_start", "role", "text", "image", "im_end"]


class TextEncoder(Protocol):
    """What rendering needs from a tokenizer: text -> ids with special strings as plain text. A tokenizer may also
    have ``count_text(text)``, ``len(encode_text(text))`` without the list (used to measure long texts)."""

    def encode_text(self, text: str) -> list[int]: ...


LONG_TEXT = (
    1 << 16
)  # characters: a text this long is counted before it is encoded when there is a length limit


class _Counted:
    """The ids of a text past the length limit: only how many there are."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def image_span(n_queries: int) -> list[int]:
    """The ids standing for one image: ``<img>``, ``n_queries`` x ``<imgpad>``, ``</img>``."""
    return [st.IMG_START_ID] + [st.IMG_PAD_ID] * n_queries + [st.IMG_END_ID]


class ChatML:
    """The blocks of a ChatML text, as parts, for one tokenizer and one image size (both entry points use it).

    Attributes:
        nl: the ids of "\\n".
        image_span: the ids of one image.
    """

    def __init__(self, tokenizer: TextEncoder, n_queries: int) -> None:
        self.encode_text = tokenizer.encode_text
        self.nl = self.encode_text("\n")
        self.image_span = image_span(n_queries)

    def content(
        self, segments: Iterable[Segment], encode: Callable[[str], Sequence[int]] | None = None
    ) -> Iterator[tuple[Part, Sequence[int]]]:
        """The parts of a block's content: ``text`` (a text piece or a tag's special id) or ``image`` (a span).
        ``encode`` replaces the tokenizer's ``encode_text`` for text pieces (called when the part is reached)."""
        encode = encode or self.encode_text
        for seg in segments:
            if isinstance(seg, Text):
                yield "text", encode(seg.text)
            elif isinstance(seg, Special):
                yield "text", [seg.token_id]
            elif isinstance(seg, Image):
                yield "image", self.image_span

    def block(
        self, role: str, segments: Iterable[Segment], encode: Callable[[str], Sequence[int]] | None = None
    ) -> Iterator[tuple[Part, Sequence[int]]]:
        """The parts of one block: ``<|im_start|>``, the role and its "\\n", the content, ``<|im_end|>``."""
        yield "im_start", [st.IM_START_ID]
        yield "role", self.encode_text(role) + self.nl
        yield from self.content(segments, encode)
        yield "im_end", [st.IM_END_ID]

    def opening(self, role: str) -> list[int]:
        """The ids opening a block that the model goes on writing (``<|im_start|>assistant\\n``)."""
        return [st.IM_START_ID] + self.encode_text(role) + self.nl


def _ids(parts: Iterable[tuple[Part, Sequence[int]]]) -> list[int]:
    return [i for _, ids in parts for i in ids]


def _images(segments: Iterable[Segment]) -> list[str]:
    return [seg.path for seg in segments if isinstance(seg, Image)]


# Training ---------------------------------------------------------------------------------------------------


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
    """Ids, the trained mask and the facts truncation and reporting need.

    Attributes:
        input_ids: the ChatML ids, no padding.
        trained: same length; True where the token is trained (see :attr:`labels`).
        images: image references as written, in the order of their spans.
        image_turns: for each image, the index of the turn that names it.
        cut_points: a ``CutPoint`` at the end of every trained assistant turn: where the sample may be cut
            without splitting a span and still keep something to train on.
        num_turns: turns rendered (system block not counted).
        control_strings: literal control-token strings found in the values (kept as text).
        dropped_first_turn: ``reference`` policy dropped a leading non-user turn.
        counted_past: ids past the ``max_length`` the sample was rendered with: counted, not kept (``input_ids``
            and ``trained`` then hold the part that fits).
    """

    input_ids: list[int]
    trained: list[bool]
    images: list[str]
    image_turns: list[int]
    cut_points: list[CutPoint]
    num_turns: int
    control_strings: Counter[str] = field(default_factory=Counter)
    dropped_first_turn: bool = False
    counted_past: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def labels(self) -> list[int]:
        """The labels the mask stands for: the id where trained, ``IGNORE_INDEX`` elsewhere (what the dataset's
        ``__getitem__`` makes of the mask; spelled out here to read a rendering)."""
        return [i if t else IGNORE_INDEX for i, t in zip(self.input_ids, self.trained, strict=True)]

    @property
    def length(self) -> int:
        """The whole sample's length in ids, those past a rendering limit included."""
        return len(self.input_ids) + self.counted_past

    def cut(self, max_len: int) -> RenderedSample | None:
        """The longest prefix ending at an assistant turn's end with at most ``max_len`` ids, or None."""
        fitting = [cp for cp in self.cut_points if cp.length <= max_len]
        if not fitting:
            return None
        last = fitting[-1]
        return replace(
            self,
            input_ids=self.input_ids[: last.length],
            trained=self.trained[: last.length],
            images=self.images[: last.num_images],
            image_turns=self.image_turns[: last.num_images],
            cut_points=fitting,
            num_turns=last.num_turns,
            counted_past=0,
        )


def trained_parts(policy: Policy, assistant: bool) -> dict[Part, bool]:
    """Which parts of a block are trained under ``policy`` (see the module docstring); ``assistant`` says whether
    the block is an assistant turn. The "\\n" after a block is trained under ``reference`` only."""
    ref = policy == "reference"
    return {
        "im_start": ref,
        "role": False,
        "text": assistant,
        "image": assistant and ref,
        "im_end": assistant or ref,
    }


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
    dropped = drops_first_turn(turns, policy)
    if dropped:  # as the original finetune.py did
        turns = turns[1:]
    if not has_assistant(turns):
        raise RenderError(
            "no assistant turn to train on"
            + (" after dropping the first turn" if policy == "reference" else "")
        )
    if not has_trained(turns):
        raise RenderError(UNTRAINED)
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

    A box may open an assistant answer when the user turn before it holds a ``<ref>`` (see :mod:`.markup`); when
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
    max_length: int | None = None,
) -> RenderedSample:
    """Ids and trained mask of turns whose markup :func:`parse_turns` parsed without error (no checks here).

    With ``max_length``, the length is checked as the sample is tokenized: ids stop being kept at the first part
    that would pass it, and the rest is only counted (``counted_past``; a text of :data:`LONG_TEXT` characters or
    more is counted before it is encoded, with the tokenizer's ``count_text`` when it has one), so an oversized
    sample costs about its own size. ``length``, the cut points and everything up to the limit are as without it.

    Args:
        turns: user/assistant turns, in the order they are rendered (nothing is dropped here).
        parsed: their parsed values.
        tokenizer: anything with ``encode_text``.
        system: the system prompt; None means ``DEFAULT_SYSTEM_PROMPT``.
        policy: ``"assistant"`` or ``"reference"``.
        n_queries: positions per image.
        max_length: keep ids up to this many (None: all).
    """
    chatml = ChatML(tokenizer, n_queries)
    count = getattr(tokenizer, "count_text", None) or (lambda text: len(tokenizer.encode_text(text)))
    nl_trained = policy == "reference"
    trained = {assistant: trained_parts(policy, assistant) for assistant in (False, True)}
    system = st.DEFAULT_SYSTEM_PROMPT if system is None else system

    input_ids: list[int] = []
    mask: list[bool] = []
    out = RenderedSample(input_ids, mask, images=[], image_turns=[], cut_points=[], num_turns=0)

    def fits(n: int) -> bool:
        return max_length is None or (not out.counted_past and len(input_ids) + n <= max_length)

    def encode(text: str) -> Sequence[int]:
        if max_length is not None and (out.counted_past or len(text) >= LONG_TEXT):
            n = count(text)
            if not fits(n):
                return _Counted(n)
        return tokenizer.encode_text(text)

    def add(ids: Sequence[int], trained_part: bool) -> None:
        if not fits(len(ids)):
            out.counted_past += len(ids)
            return
        assert not isinstance(ids, _Counted)
        input_ids.extend(ids)
        mask.extend([trained_part] * len(ids))

    def add_block(
        role: str, segments: Iterable[Segment], assistant: bool, context_only: bool = False
    ) -> None:
        flags = trained[assistant]
        for part, ids in chatml.block(role, segments, encode):
            add(ids, flags[part] and not context_only)
        add(chatml.nl, nl_trained and not context_only)

    count_control_strings(system, into=out.control_strings)
    add_block("system", [Text(system)], assistant=False)
    for turn, value in zip(turns, parsed, strict=True):
        assistant = turn.role == "assistant"
        if value.control_strings:
            out.control_strings.update(value.control_strings)
        add_block(turn.role, value.segments, assistant, context_only=not turn.trained)
        images = value.images
        out.images += images
        out.image_turns += [turn.index] * len(images)
        out.num_turns += 1
        if assistant and turn.trained:
            out.cut_points.append(CutPoint(out.length, len(out.images), out.num_turns))
    return out


# Prompts ----------------------------------------------------------------------------------------------------


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
    segments = read_prompt(text)
    return _ids(ChatML(tokenizer, n_queries).content(segments)), _images(segments)


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
    chatml = ChatML(tokenizer, n_queries)
    nl = chatml.nl

    def block(role: str, content: str) -> tuple[list[int], list[str]]:
        segments = read_prompt(content)
        return _ids(chatml.block(role, segments)), _images(segments)

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
    input_ids = system_ids + kept + nl + query_ids + nl + chatml.opening("assistant")
    return Context(input_ids, kept_images + query_images, kept_pairs)
