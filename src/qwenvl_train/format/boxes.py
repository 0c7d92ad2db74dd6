"""Box coordinates: from the conventions other datasets use to Qwen-VL's ``<box>`` integers, and back to pixels.

Qwen-VL writes a box as two corners, integers in [0, 1000): ``x`` is ``1000 * x_pixels / width`` rounded down,
clamped to 999 (so a box touching the right or bottom edge, where the ratio is exactly 1000, is written 999).
Datasets write boxes three ways, and the caller names which (:data:`BoxKind`):

- ``xyxy``: pixel corners ``[x1, y1, x2, y2]`` (ms-swift ``real``, Pascal VOC);
- ``xywh``: pixel corner and size ``[x, y, width, height]`` (COCO, RefCOCO);
- ``norm1``: corners as fractions of the image, ``[x1, y1, x2, y2]`` in [0, 1] (ms-swift ``norm1``).

:func:`to_qwen_box` needs the image's real size (read from its header by the caller, never assumed). A number is
taken exactly as its decimal form reads (``0.3`` is three tenths, not the binary float just under it), so a
conversion can be checked by hand. A box that leaves its image, has its corners the wrong way round or has no
area raises :class:`BoxError` (one line, without the record: the caller names it).

:func:`to_pixels` is the inverse used to draw or score a box on its picture (eval, chat drawing, the server): the
original's ``int(x / 1000 * width)``. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

from ..errors import UserError

BoxKind = Literal["xyxy", "xywh", "norm1"]
BOX_KINDS: tuple[str, ...] = ("xyxy", "xywh", "norm1")
SCALE = 1000  # Qwen-VL coordinates are integers in [0, SCALE)


class BoxError(UserError, ValueError):
    """A box that cannot be converted; one line saying what is wrong with it (not which record: the caller's)."""


def _exact(value: object, what: str) -> Fraction:
    """``value`` as an exact fraction of its decimal form; a non-number is a :class:`BoxError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BoxError(f"{what} is {value!r}, expected a number")
    if not math.isfinite(value):
        raise BoxError(f"{what} is {value!r}, expected a finite number")
    return Fraction(value) if isinstance(value, int) else Fraction(repr(value))


def _shown(box: Sequence[object]) -> str:
    return "[" + ", ".join(repr(v) if isinstance(v, str) else f"{v}" for v in box) + "]"


def to_qwen_box(box: Sequence[float], kind: BoxKind, width: int, height: int) -> tuple[int, int, int, int]:
    """The Qwen-VL corners ``(x1, y1, x2, y2)`` (integers in [0, 1000)) of a box given as ``kind``.

    Args:
        box: four numbers, read as ``kind`` says (see the module docstring).
        kind: ``"xyxy"``, ``"xywh"`` (pixels) or ``"norm1"`` (fractions of the image).
        width: the image's width in pixels, from its header.
        height: the image's height in pixels.

    Raises:
        BoxError: not four numbers, an unknown kind, a corner outside the image, ``x2 < x1`` / ``y2 < y1`` (or a
            negative width or height), or zero area.
    """
    if kind not in BOX_KINDS:
        raise BoxError(f"unknown box kind {kind!r} (expected one of {', '.join(BOX_KINDS)})")
    if isinstance(box, (str, bytes)) or not isinstance(box, Sequence) or len(box) != 4:
        raise BoxError(f"box {box!r} is not a list of four numbers")
    shown = f"{kind} box {_shown(box)}"
    a, b, c, d = (_exact(v, f"{shown}: coordinate {i + 1}") for i, v in enumerate(box))
    if kind == "xywh":
        if c < 0 or d < 0:
            raise BoxError(f"{shown}: negative {'width' if c < 0 else 'height'}")
        c, d = a + c, b + d
    elif c < a or d < b:
        raise BoxError(f"{shown}: {'x2 < x1' if c < a else 'y2 < y1'} (corners the wrong way round)")
    if c == a or d == b:
        raise BoxError(f"{shown}: zero area")
    limit_x, limit_y = (Fraction(1), Fraction(1)) if kind == "norm1" else (Fraction(width), Fraction(height))
    if a < 0 or b < 0 or c > limit_x or d > limit_y:
        inside = "[0, 1]" if kind == "norm1" else f"the {width}x{height} image"
        raise BoxError(f"{shown}: outside {inside}")
    if kind != "norm1":
        a, c = a / width, c / width
        b, d = b / height, d / height
    return tuple(min(SCALE - 1, int(v * SCALE)) for v in (a, b, c, d))  # type: ignore[return-value]


def to_pixels(points: Sequence[tuple[int, int]], width: int, height: int) -> list[tuple[int, int]]:
    """Qwen-VL [0, 1000) points back to pixels of a ``width`` x ``height`` image, as the original:
    ``int(x / 1000 * width)``."""
    return [(int(x / SCALE * width), int(y / SCALE * height)) for x, y in points]
