"""The ``boxes`` extension field: the boxes of an answer, read leniently, in [0, 1000) and in pixels.

The answer text keeps ``<ref>..</ref><box>(x1,y1),(x2,y2)</box>`` as the model wrote it; this field adds what
a client would otherwise parse itself (:func:`qwenvl_train.format.markup.parse_groundings`, which never
raises). One entry per ``<box>`` / ``<quad>`` in order::

    {"ref": "the red circle",          # the <ref> owning it, or null
     "kind": "box",                    # or "quad"
     "status": "ok",                   # "malformed": the body is not coordinates; "unfinished": no closing tag
     "text": "(120,80),(360,300)",     # the body as written
     "box": [120, 80, 360, 300],       # x1, y1, x2, y2 in [0, 1000) (a quad: its enclosing rectangle); or null
     "points": [[120, 80], [360, 300]],# the corners as written (four for a quad); or null
     "picture": 1,                     # the "Picture k" it refers to: the latest picture; or null
     "pixels": [76, 51, 230, 192]}     # box scaled to that picture (int(x / 1000 * width)); or null
"""

from __future__ import annotations

from typing import Any

from ..format.boxes import to_pixels
from ..format.markup import parse_groundings, split_markup

KINDS = ("box", "quad")


def box_pixels(box: tuple[int, int, int, int], width: int, height: int) -> list[int]:
    """A [0, 1000) box scaled to pixels as the original draws it (:func:`qwenvl_train.format.boxes.to_pixels`)."""
    x1, y1, x2, y2 = box
    return [v for point in to_pixels([(x1, y1), (x2, y2)], width, height) for v in point]


def boxes_field(text: str, picture: int | None, size: tuple[int, int] | None) -> list[dict[str, Any]]:
    """The ``boxes`` of an answer; ``picture`` is the latest picture's number and ``size`` its (width, height)."""
    closed = [piece.closed for piece in split_markup(text) if piece.key in KINDS]
    out: list[dict[str, Any]] = []
    for grounding, is_closed in zip(parse_groundings(text), closed, strict=True):
        box = grounding.box
        status = "unfinished" if not is_closed else "malformed" if box is None else "ok"
        out.append(
            {
                "ref": grounding.ref,
                "kind": grounding.kind,
                "status": status,
                "text": grounding.raw,
                "box": list(box) if box is not None else None,
                "points": [list(p) for p in grounding.points] if grounding.points is not None else None,
                "picture": picture,
                "pixels": box_pixels(box, *size) if box is not None and size is not None else None,
            }
        )
    return out
