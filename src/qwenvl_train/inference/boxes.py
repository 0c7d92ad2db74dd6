"""Read ``<img>``, ``<ref>``, ``<box>`` and ``<quad>`` out of text, leniently: nothing here ever raises.

Generated text is not data: a model may write a box with three numbers, never close a tag, or put the
corners the wrong way round. The rules:

- An opening tag takes everything up to the next closing tag of the same kind as its value (as the original
  tokenizer did). An opening tag that is never closed is kept as plain text, and reading goes on right
  after it; a closing tag without an opening one is plain text too.
- A box body must be ``(x1,y1),(x2,y2)`` and a quad body four such points, ASCII integers, spaces allowed;
  anything else is a *malformed* grounding (``points`` None), as is a ``<box>``/``<quad>`` never closed.
- Corners are put in order (``x1 <= x2``, ``y1 <= y2``) and clipped to [0, 1000].
- A ``<ref>`` names the boxes and quads that follow it directly (whitespace between them allowed): one ref
  can own a chain of several boxes; any other text ends the chain.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ..data.markup import COORD_MAX, TAG_RE

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
    """Split ``text`` into text pieces and tag values (see the module docstring for malformed input)."""
    pos = 0
    buffer = ""
    while True:
        m = TAG_RE.search(text, pos)
        if m is None:
            buffer += text[pos:]
            break
        buffer += text[pos : m.start()]
        name = m.group(2)
        end = text.find(f"</{name}>", m.end()) if m.group(1) != "/" else -1
        if end < 0:  # a stray closing tag, or an opening tag never closed: plain text
            if m.group(1) != "/" and name in ("box", "quad"):
                if buffer:
                    yield Piece("text", buffer)
                    buffer = ""
                yield Piece(name, "", closed=False)
            else:
                buffer += m.group(0)
            pos = m.end()
            continue
        if buffer:
            yield Piece("text", buffer)
            buffer = ""
        yield Piece("image" if name == "img" else name, text[m.end() : end])
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
    """Every ``<box>`` and ``<quad>`` of ``text`` in order, with the ref owning it (see the module docstring)."""
    out: list[Grounding] = []
    ref: str | None = None
    follows_ref = False
    for piece in split_markup(text):
        if piece.key == "ref":
            ref, follows_ref = piece.value.strip(), True
        elif piece.key in ("box", "quad"):
            kind: Kind = "box" if piece.key == "box" else "quad"
            points = parse_points(kind, piece.value) if piece.closed else None
            out.append(Grounding(kind, ref, points, piece.value, follows_ref))
            follows_ref = False
        elif not (piece.key == "text" and piece.value.isspace()):
            ref, follows_ref = None, False
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
