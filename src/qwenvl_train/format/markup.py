"""The Qwen-VL markup: one tag scanner and the three ways the format reads it.

The tags are ``<img>``, ``<ref>``, ``<box>`` and ``<quad>`` with their closing forms; :func:`find_tag` is the one
scanner of them. It is read three ways, each with its own rules for what is not well-formed:

- strict (:func:`parse_value`), for training data: every malformed tag is a :class:`MarkupError` (the rules
  below);
- prompt (:func:`read_prompt`), for a query given to ``model.chat``: as the original tokenizer read chat text,
  ``<ref>``/``<box>``/``<quad>`` tags become their special ids wherever they stand, balanced or not; only a
  ``<img>`` never closed or a stray ``</img>`` is a :class:`PromptError`;
- lenient (:func:`split_markup`, :func:`to_list_format`, :func:`parse_groundings`, :func:`latest_image`), for
  what a model writes: nothing ever raises (the rules in the section "Lenient reading" below).

The strict and prompt readings give :data:`Segment` s (:class:`Text`, :class:`Special`, :class:`Image`) in
reading order, which :mod:`.render` turns into ids.

Strict reading: a conversation value into text, special tags and images.

Markup (case-sensitive, exactly these tags)::

    Picture 1: <img>PATH</img>        an image; PATH is a local path or an http(s) URL, any length
    <ref>the dog</ref>                a referring expression (text inside is plain text)
    <box>(x1,y1),(x2,y2)</box>        a box: integers in [0, 1000), x1 <= x2, y1 <= y2
    <quad>(x1,y1),...,(x4,y4)</quad>  a quadrilateral: four points, integers in [0, 1000)

Coordinates are ASCII digits 0-9 only: no sign (``+7``), no full-width or other Unicode digits (``１２``),
and only spaces may separate the numbers (no tab or line break). Anything else is an error, not text
trained as written: the body is trained as text, and a model would learn to write coordinates that
nothing downstream parses.

How text is split into tokens: the value is cut at the tags; each text piece between two tags is
NFC-normalised and encoded on its own, with every special-token string in it treated as plain text,
and each tag becomes its special id. This equals what the original tokenizer produced (it normalised
the whole value, then tiktoken split the special tokens out *before* its regex and BPE ran, so no BPE
merge ever crosses a tag). Normalising piece by piece differs from normalising the whole value only when
a value has U+0338 (combining long solidus) right after a tag's ``>``: the original composed them into
``≯`` and lost the tag; here the tag stays a tag. Image paths are used exactly as written (not
normalised: file names are bytes, and an NFD name from macOS must still be found).

The one deliberate difference: a literal ``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``,
``<|extra_N|>`` or ``<imgpad>`` inside a value stays text here (the original turned it into a control
id, so data could inject ChatML structure); such strings are counted.

Where a ``<box>`` / ``<quad>`` may appear (the "ref context" rule). A box belongs to a ``<ref>``:

1. directly after ``</ref>`` (``<ref>the dog</ref><box>...</box>``), or directly after another box or
   quad of the same chain (several boxes for one ref: ``<ref>dogs</ref><box>..</box><box>..</box>``);
2. at the very start of an assistant answer (leading whitespace allowed) when the user turn it answers
   contains a ``<ref>`` (the referring-expression format: the question names the ref, the answer is its
   box). That case is decided by the caller via ``ref_context``.

Anything else (a bare ``<box>`` in running text) is an error, unless ``allow_bare_boxes=True``
(``--allow_bare_boxes``): the original ``from_list_format`` can emit a box without a ref, so data made
that way is legal but loses the link between phrase and box; it is rejected by default so the mistake
is seen.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ..errors import UserError
from . import tokens as st

MARKUP_TAGS = ("img", "ref", "box", "quad")
_TAG_RE = re.compile(r"<(/?)(img|ref|box|quad)>")  # the one pattern of the tags: use find_tag
_OPEN_ID = {"ref": st.REF_START_ID, "box": st.BOX_START_ID, "quad": st.QUAD_START_ID}
_CLOSE_ID = {"ref": st.REF_END_ID, "box": st.BOX_END_ID, "quad": st.QUAD_END_ID}

# Special-token strings that are not markup: inside a value they are plain text (and counted).
CONTROL_STRINGS: tuple[str, ...] = tuple(
    tok
    for tok in st.SPECIAL_TOKENS
    if tok not in {f"<{t}>" for t in MARKUP_TAGS} | {f"</{t}>" for t in MARKUP_TAGS}
)
_CONTROL_RE = re.compile("|".join(re.escape(t) for t in sorted(CONTROL_STRINGS, key=len, reverse=True)))

COORD_MAX = 1000  # coordinates are integers in [0, COORD_MAX)
_POINT_RE = re.compile(r"\( *([^,()]*?) *, *([^,()]*?) *\)")
_INTEGER_RE = re.compile(r"-?[0-9]+")  # a minus sign is accepted here only to say "outside [0, 1000)"


# The tag scanner --------------------------------------------------------------------------------------------


class Tag(NamedTuple):
    """One markup tag found in a text: where it stands, which tag, opening or closing."""

    start: int
    end: int
    name: str  # img, ref, box or quad
    closing: bool

    @property
    def text(self) -> str:
        """The tag as written (``<box>``, ``</ref>``...)."""
        return f"</{self.name}>" if self.closing else f"<{self.name}>"


def find_tag(text: str, pos: int = 0) -> Tag | None:
    """The first markup tag of ``text`` at or after ``pos`` (case-sensitive, exactly the four tags), or None."""
    m = _TAG_RE.search(text, pos)
    return None if m is None else Tag(m.start(), m.end(), m.group(2), m.group(1) == "/")


# Segments: what the strict and prompt readings give ---------------------------------------------------------


class Text(NamedTuple):
    """Plain text, encoded with special-token strings as text."""

    text: str


class Special(NamedTuple):
    """A markup tag, emitted as its special id."""

    token_id: int


class Image(NamedTuple):
    """An image reference exactly as written between ``<img>`` and ``</img>``."""

    path: str


Segment = Text | Special | Image


# Strict reading (the module docstring's rules) --------------------------------------------------------------


class MarkupError(UserError, ValueError):
    """A value's markup is malformed; the message is one line and says where (character offset)."""


@dataclass
class ParsedValue:
    """A parsed value: its segments in order plus facts the caller reports."""

    segments: list[Segment]
    has_ref: bool = False
    control_strings: Counter[str] = field(default_factory=Counter)

    @property
    def images(self) -> list[str]:
        """Image paths in reading order."""
        return [s.path for s in self.segments if isinstance(s, Image)]


def parse_point_list(body: str, n_points: int, what: str) -> list[tuple[int, int]]:
    """Parse ``(x,y),(x,y),...`` with exactly ``n_points`` integer points in [0, 1000).

    Raises:
        MarkupError: on a malformed list, a non-integer, or a coordinate out of range.
    """
    shown = f"<{what}>{printable(body)}</{what}>"
    for ch in body:
        if ch.isspace() and ch != " ":
            kind = "a line break" if ch in "\r\n" else repr(ch)
            raise MarkupError(f"{shown}: {kind} inside <{what}> (only spaces may separate the numbers)")
    points: list[tuple[int, int]] = []
    pos = 0
    stripped = body.strip(" ")
    while pos < len(stripped):
        if points:
            if stripped[pos] != ",":
                raise MarkupError(f"{shown}: expected ',' between points at {stripped[pos:]!r}")
            pos += 1
            while pos < len(stripped) and stripped[pos] == " ":
                pos += 1
        m = _POINT_RE.match(stripped, pos)
        if not m:
            raise MarkupError(f"{shown}: expected a point '(x,y)' at {stripped[pos:]!r}")
        coords = []
        for raw in m.groups():
            if not _INTEGER_RE.fullmatch(raw):
                raise MarkupError(f"{shown}: coordinate {raw!r} is not an integer (ASCII digits 0-9 only)")
            value = int(raw)
            if not 0 <= value < COORD_MAX:
                raise MarkupError(f"{shown}: coordinate {value} is outside [0, {COORD_MAX})")
            coords.append(value)
        points.append((coords[0], coords[1]))
        pos = m.end()
        while pos < len(stripped) and stripped[pos] == " ":
            pos += 1
    if len(points) != n_points:
        raise MarkupError(f"{shown}: {len(points)} point(s), expected {n_points}")
    return points


def printable(text: str) -> str:
    """``text`` with line breaks and other non-printable characters escaped, for a one-line message."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def validate_box(body: str) -> tuple[int, int, int, int]:
    """Check a box body ``(x1,y1),(x2,y2)``: integers in [0, 1000), x1 <= x2 and y1 <= y2."""
    (x1, y1), (x2, y2) = parse_point_list(body, 2, "box")
    if x1 > x2 or y1 > y2:
        raise MarkupError(f"<box>{body}</box>: inverted corners (need x1 <= x2 and y1 <= y2)")
    return x1, y1, x2, y2


def validate_quad(body: str) -> list[tuple[int, int]]:
    """Check a quad body: four points ``(x,y)``, integers in [0, 1000)."""
    return parse_point_list(body, 4, "quad")


def count_control_strings(text: str, into: Counter[str] | None = None) -> Counter[str]:
    """Occurrences of special-token strings (other than markup tags) in ``text``, added to ``into`` (a new
    counter when None)."""
    counts = Counter() if into is None else into
    if "<" in text:  # most text has none: no regex scan, no update
        counts.update(m.group(0) for m in _CONTROL_RE.finditer(text))
    return counts


def parse_value(value: str, *, ref_context: bool = False, allow_bare_boxes: bool = False) -> ParsedValue:
    """Split one conversation value into segments, validating the markup.

    Args:
        value: the turn's text as written in the data.
        ref_context: a box may open this value (an assistant answer to a question holding a ``<ref>``).
        allow_bare_boxes: accept ``<box>``/``<quad>`` anywhere.

    Returns:
        The segments (text pieces, special tags, images) in order.

    Raises:
        MarkupError: unbalanced or nested tags, an empty ``<img>``/``<ref>``, a bad box or quad, or a
            box outside a ref context.
    """
    parsed = ParsedValue(segments=[])
    segments = parsed.segments
    # What the previous element was, for the ref-context rule: "start" (only whitespace so far),
    # "chain" (right after </ref>, </box> or </quad>), or "other".
    prev = "start"
    pos = 0
    n = len(value)
    while pos < n:
        m = find_tag(value, pos)
        text = value[pos : m.start if m else n]
        if text:
            segments.append(Text(text))
            count_control_strings(text, into=parsed.control_strings)
            if not (prev == "start" and text.isspace()):
                prev = "other"
        if not m:
            break
        name = m.name
        if m.closing:
            raise MarkupError(f"</{name}> at character {m.start} without an opening <{name}>")
        end = find_tag(value, m.end)
        if end is None:
            raise MarkupError(f"<{name}> at character {m.start} is never closed")
        if end.closing and end.name != name:
            raise MarkupError(
                f"</{end.name}> at character {end.start} does not close <{name}> (opened at character {m.start})"
            )
        if not end.closing:
            raise MarkupError(
                f"<{end.name}> at character {end.start} inside <{name}> "
                f"(opened at character {m.start}): tags cannot nest"
            )
        body = value[m.end : end.start]
        if name == "img":
            if not body.strip():
                raise MarkupError(f"empty <img></img> at character {m.start}")
            segments.append(Image(body))
            prev = "other"
        elif name == "ref":
            if not body.strip():
                raise MarkupError(f"empty <ref></ref> at character {m.start}")
            parsed.has_ref = True
            count_control_strings(body, into=parsed.control_strings)
            segments += [Special(st.REF_START_ID), Text(body), Special(st.REF_END_ID)]
            prev = "chain"
        else:  # box / quad
            in_context = prev == "chain" or (prev == "start" and ref_context)
            if not (in_context or allow_bare_boxes):
                raise MarkupError(
                    f"<{name}> at character {m.start} is not attached to a <ref> (it must directly "
                    f"follow </ref> or another box; use --allow_bare_boxes to accept bare boxes)"
                )
            if name == "box":
                validate_box(body)
            else:
                validate_quad(body)
            segments += [Special(_OPEN_ID[name]), Text(body), Special(_CLOSE_ID[name])]
            prev = "chain"
        pos = end.end
    return parsed


# Prompt reading ---------------------------------------------------------------------------------------------


class PromptError(UserError, ValueError):
    """A query cannot be turned into a prompt (an ``<img>`` never closed, a stray ``</img>``); one line."""


def read_prompt(text: str) -> list[Segment]:
    """Split a query or response given to ``model.chat`` into segments, as the original tokenizer read chat text.

    Each ``<img>`` takes everything up to the next ``</img>`` as its path (exactly as written); every other tag,
    opening or closing, balanced or not, is its special id; the text between tags is one :class:`Text` each.

    Raises:
        PromptError: an ``<img>`` without ``</img>``, or a ``</img>`` without ``<img>``.
    """
    segments: list[Segment] = []
    pos = 0
    while (tag := find_tag(text, pos)) is not None:
        if tag.start > pos:
            segments.append(Text(text[pos : tag.start]))
        pos = tag.end
        if tag.name != "img":
            segments.append(Special(st.SPECIAL_IDS[tag.text]))
        elif tag.closing:
            raise PromptError(f"</img> at character {tag.start} without an opening <img>: {text!r}")
        else:
            end = text.find(st.IMG_END, pos)
            if end < 0:
                raise PromptError(f"<img> at character {tag.start} is never closed by </img>: {text!r}")
            segments.append(Image(text[pos:end]))
            pos = end + len(st.IMG_END)
    if pos < len(text):
        segments.append(Text(text[pos:]))
    return segments


# Lenient reading --------------------------------------------------------------------------------------------
#
# Generated text is not data: a model may write a box with three numbers, never close a tag, or put the corners
# the wrong way round. The rules:
#
# - An opening tag takes everything up to the next closing tag of the same kind as its value (as the original
#   tokenizer did). An opening tag that is never closed is kept as plain text, and reading goes on right after
#   it; a closing tag without an opening one is plain text too.
# - A box body must be ``(x1,y1),(x2,y2)`` and a quad body four such points, ASCII integers, spaces allowed;
#   anything else is a *malformed* grounding (``points`` None), as is a ``<box>``/``<quad>`` never closed.
# - Corners are put in order (``x1 <= x2``, ``y1 <= y2``) and clipped to [0, 1000].
# - A ``<ref>`` names the boxes and quads that follow it directly (whitespace between them allowed): one ref can
#   own a chain of several boxes; any other text ends the chain.

Kind = Literal["box", "quad"]
_POINT = r"\s*\(\s*([0-9]+)\s*,\s*([0-9]+)\s*\)\s*"
_BOX_RE = re.compile(",".join([_POINT] * 2))
_QUAD_RE = re.compile(",".join([_POINT] * 4))


class Piece(NamedTuple):
    """One piece of text: ``key`` is ``text``, ``image``, ``ref``, ``box`` or ``quad``.

    ``closed`` is False for an opening ``<box>``/``<quad>`` that is never closed (its ``value`` is empty).
    """

    key: str
    value: str
    closed: bool = True


def split_markup(text: str) -> Iterator[Piece]:
    """Split ``text`` into text pieces and tag values, leniently (see "Lenient reading" above)."""
    pos = 0
    buffer = ""
    while True:
        tag = find_tag(text, pos)
        if tag is None:
            buffer += text[pos:]
            break
        buffer += text[pos : tag.start]
        name = tag.name
        end = text.find(f"</{name}>", tag.end) if not tag.closing else -1
        if end < 0:  # a stray closing tag, or an opening tag never closed: plain text
            if not tag.closing and name in ("box", "quad"):
                if buffer:
                    yield Piece("text", buffer)
                    buffer = ""
                yield Piece(name, "", closed=False)
            else:
                buffer += tag.text
            pos = tag.end
            continue
        if buffer:
            yield Piece("text", buffer)
            buffer = ""
        yield Piece("image" if name == "img" else name, text[tag.end : end])
        pos = end + len(name) + 3
    if buffer:
        yield Piece("text", buffer)


def to_list_format(text: str) -> list[dict[str, str]]:
    """The original tokenizer's ``to_list_format``: ``[{"text": ...}, {"image": path}, {"ref": ...},
    {"box": "(x1,y1),(x2,y2)"}, {"quad": ...}]`` in reading order, values as written.

    Joining the items back with their tags (``<img>``, ``<ref>``, ...) gives ``text`` again; an unclosed
    ``<box>``/``<quad>`` comes back as the text ``"<box>"``.
    """
    items: list[dict[str, str]] = []
    for piece in split_markup(text):
        if piece.key != "text" and piece.closed:
            items.append({piece.key: piece.value})
            continue
        value = piece.value if piece.closed else f"<{piece.key}>"
        if items and "text" in items[-1]:  # an unclosed tag turned into text joins its neighbours
            items[-1]["text"] += value
        else:
            items.append({"text": value})
    return items


def from_list_format(items: Iterable[dict[str, Any]]) -> str:
    """The original tokenizer's ``from_list_format``: a query written from ``[{"image": path}, {"text": ...},
    {"ref": ..., "box": [(x1, y1, x2, y2), ...]}]``, the inverse of :func:`to_list_format` for those items.

    It accepts what the original accepted, as it accepted it (a user's query, not training data, so nothing is
    checked as :func:`image_markup` and :func:`box_markup` check it): an ``image`` item becomes
    ``Picture N: <img>path</img>\\n`` (N from 1 over the items, the path as given), a ``text`` item is kept as
    is, a ``box`` item writes ``<ref>ref</ref>`` when it has a ``ref`` and then one ``<box>(x1,y1),(x2,y2)</box>``
    per box of its list, each coordinate through ``int`` (so ``12.7`` is written ``12``). An item is read by its
    first key among ``image``, ``text``, ``box``.

    Raises:
        ValueError: an item with none of those keys.
    """
    text = ""
    n_images = 0
    for item in items:
        if "image" in item:
            n_images += 1
            text += _picture(n_images, item["image"])
        elif "text" in item:
            text += item["text"]
        elif "box" in item:
            if "ref" in item:
                text += f"{st.REF_START}{item['ref']}{st.REF_END}"
            for x1, y1, x2, y2 in item["box"]:
                text += f"{st.BOX_START}({int(x1)},{int(y1)}),({int(x2)},{int(y2)}){st.BOX_END}"
        else:
            raise ValueError(f"from_list_format: unsupported element {item!r} (expected image, text or box)")
    return text


@dataclass(frozen=True)
class Grounding:
    """A box or quad read from text.

    Attributes:
        kind: ``"box"`` or ``"quad"``.
        ref: the ``<ref>`` text owning it (stripped), or None.
        points: the corners in [0, 1000] (two for a box, ordered; four for a quad), None when malformed.
        raw: the body as written (empty for an unclosed tag).
        follows_ref: it comes right after its ``</ref>`` (the first of a chain): where a label is drawn.
    """

    kind: Kind
    ref: str | None
    points: tuple[tuple[int, int], ...] | None
    raw: str
    follows_ref: bool = False

    @property
    def malformed(self) -> bool:
        """The body could not be read as coordinates."""
        return self.points is None

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """``(x1, y1, x2, y2)``: the box itself, or the rectangle enclosing a quad; None when malformed."""
        if self.points is None:
            return None
        xs = [x for x, _ in self.points]
        ys = [y for _, y in self.points]
        return min(xs), min(ys), max(xs), max(ys)


def _clip(value: str) -> int:
    return min(int(value), COORD_MAX)


def parse_points(kind: Kind, body: str) -> tuple[tuple[int, int], ...] | None:
    """Read a box or quad body; None when it does not have exactly the expected integer points."""
    m = (_BOX_RE if kind == "box" else _QUAD_RE).fullmatch(body)
    if m is None:
        return None
    values = [_clip(v) for v in m.groups()]
    points = tuple(zip(values[::2], values[1::2], strict=True))
    if kind == "box":
        (x1, y1), (x2, y2) = points
        points = ((min(x1, x2), min(y1, y2)), (max(x1, x2), max(y1, y2)))
    return points


def parse_groundings(text: str) -> list[Grounding]:
    """Every ``<box>`` and ``<quad>`` of ``text`` in order, with the ref owning it (see "Lenient reading")."""
    return [grounding for _, grounding in groundings_by_picture([text])]


def groundings_by_picture(values: Sequence[str]) -> list[tuple[str | None, Grounding]]:
    """Every ``<box>`` and ``<quad>`` of a conversation's values (in order), each with the picture it is drawn on:
    the latest ``<img>`` before it in the conversation (the original's rule; None before any picture).

    Read leniently, as :func:`parse_groundings` reads one text; one addition, for labelling: boxes opening a value
    (whitespace before them allowed) without a ref of their own take the last ``<ref>`` of the value before (the
    referring-expression format: the question names the ref, the answer is its box).
    """
    out: list[tuple[str | None, Grounding]] = []
    image: str | None = None
    question_ref: str | None = None
    for value in values:
        ref: str | None = None
        follows_ref = False
        at_start = True
        last_ref: str | None = None
        for piece in split_markup(value):
            if piece.key == "ref":
                ref, follows_ref = piece.value.strip(), True
                last_ref, at_start = ref, False
            elif piece.key in ("box", "quad"):
                kind: Kind = "box" if piece.key == "box" else "quad"
                points = parse_points(kind, piece.value) if piece.closed else None
                if ref is None and at_start and question_ref:
                    ref, follows_ref = question_ref, True
                out.append((image, Grounding(kind, ref, points, piece.value, follows_ref)))
                follows_ref = False
            elif not (piece.key == "text" and piece.value.isspace()):
                ref, follows_ref, at_start = None, False, False
                if piece.key == "image":
                    image = piece.value
        question_ref = last_ref
    return out


def latest_image(response: str, history: list[tuple[str, str | None]] | None = None) -> str | None:
    """The image a response's boxes refer to: the last ``<img>`` of the response, else of the history's
    queries from the newest to the oldest (the original's rule); None when there is none."""
    texts = [response] + [query for query, _ in reversed(history or [])]
    for text in texts:
        images = [piece.value for piece in split_markup(text) if piece.key == "image"]
        if images:
            return images[-1]
    return None


# Writing markup ---------------------------------------------------------------------------------------------
#
# What importers write (``qwenvl-train convert``): the tags built here, never by hand elsewhere. Each writer
# refuses text that would not read back as written (a path holding ``</img>``, a ref holding a tag).


def _plain(text: str, what: str) -> str:
    if not text.strip():
        raise MarkupError(f"empty {what}")
    tag = find_tag(text)
    if tag is not None:
        raise MarkupError(f"{what} {printable(text)!r} holds the tag {tag.text}")
    return text


def _picture(index: int, path: str) -> str:
    return f"Picture {index}: {st.IMG_START}{path}{st.IMG_END}\n"


def image_markup(index: int, path: str) -> str:
    """``Picture {index}: <img>{path}</img>\\n``: the ``index``-th picture (from 1) of a conversation."""
    return _picture(index, _plain(path, "image path"))


def box_markup(box: tuple[int, int, int, int]) -> str:
    """``<box>(x1,y1),(x2,y2)</box>`` for Qwen-VL corners (checked as data is: integers in [0, 1000), ordered)."""
    x1, y1, x2, y2 = box
    body = f"({x1},{y1}),({x2},{y2})"
    validate_box(body)
    return f"{st.BOX_START}{body}{st.BOX_END}"


def ref_markup(ref: str) -> str:
    """``<ref>{ref}</ref>``."""
    return f"{st.REF_START}{_plain(ref, 'ref text')}{st.REF_END}"


def grounding_markup(ref: str | None, boxes: Sequence[tuple[int, int, int, int]]) -> str:
    """``<ref>{ref}</ref><box>..</box><box>..</box>``: a ref and its chain of boxes (just the boxes when ``ref``
    is None, for an answer whose question holds the ref)."""
    if not boxes:
        raise MarkupError("a grounding needs at least one box")
    return (ref_markup(ref) if ref is not None else "") + "".join(box_markup(b) for b in boxes)
