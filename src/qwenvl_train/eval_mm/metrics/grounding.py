"""Referring-expression grounding as ``evaluate_grounding.py`` scores it: precision@1 at IoU >= 0.5.

The original reads the *first* match of ``\\((.*?)\\),\\((.*?)\\)`` in the answer (so text around the box, and
``<box>`` tags, are ignored); each group must split on its one comma into two numbers, anything else (no match,
a missing comma, three numbers, a word) is the zero box. The numbers are on Qwen-VL's 0-999 grid: divided by
999 and multiplied by the picture's width (x) and height (y). The reference box is the data line's ``bbox``
``[x1, y1, x2, y2]`` in pixels. The IoU is computed in float32 as torchvision's ``box_area`` / ``box_iou`` do
(the original uses torch tensors), without sorting the corners: a box drawn right-to-left has a negative area.
An IoU that is NaN (two empty boxes) is not a hit.

``official`` sorts each box's corners before the IoU; everything else is the same.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

IOU_THRESHOLD = 0.5
GRID = 999
#: The original's pattern: the first "(a),(b)" in the answer, whatever a and b hold.
ORIGINAL_BOX_PATTERN = re.compile(r"\((.*?)\),\((.*?)\)")

Box = tuple[float, float, float, float]
ZERO_BOX: Box = (0.0, 0.0, 0.0, 0.0)


def parse_original_box(answer: str) -> Box | None:
    """The ``(x1, y1, x2, y2)`` the original reads from ``answer`` (0-999 grid), or None (the zero box)."""
    found = ORIGINAL_BOX_PATTERN.search(answer)
    if found is None:
        return None
    corners: list[float] = []
    for group in found.groups():
        parts = group.split(",")
        if len(parts) != 2:
            return None
        try:
            corners.extend(float(part) for part in parts)
        except ValueError:
            return None
    return (corners[0], corners[1], corners[2], corners[3])


def grid_to_pixels(box: Box, width: float, height: float) -> Box:
    """``box`` on the 0-999 grid in pixels, in float32 as the original computes it (``/ 999`` then ``* w``)."""
    b = np.asarray(box, dtype=np.float32) / np.float32(GRID)
    b[0::2] *= np.float32(width)
    b[1::2] *= np.float32(height)
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


def _sorted(box: Box) -> Box:
    return (min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3]))


def box_iou(a: Sequence[float], b: Sequence[float], sort_corners: bool = False) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes in float32, as torchvision computes it (NaN when the union is 0)."""
    if sort_corners:
        a, b = _sorted(tuple(a)), _sorted(tuple(b))  # type: ignore[arg-type]
    p = np.asarray(a, dtype=np.float32)
    g = np.asarray(b, dtype=np.float32)
    area_p = (p[2] - p[0]) * (p[3] - p[1])
    area_g = (g[2] - g[0]) * (g[3] - g[1])
    left_top = np.maximum(p[:2], g[:2])
    right_bottom = np.minimum(p[2:], g[2:])
    wh = np.clip(right_bottom - left_top, np.float32(0), None)
    inter = wh[0] * wh[1]
    union = area_p + area_g - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(inter / union)


def grounding_iou(
    answer: str, reference: Sequence[float], width: float, height: float, scoring: str = "original"
) -> tuple[float, Box, bool]:
    """The IoU of the answer's box with the reference, the predicted box in pixels, and whether a box was read.

    The IoU is NaN when both boxes are empty (the original counts that as a miss); see :func:`is_hit`.
    """
    grid_box = parse_original_box(answer)
    pixels = grid_to_pixels(grid_box or ZERO_BOX, width, height)
    iou = box_iou(pixels, reference, sort_corners=scoring == "official")
    return iou, pixels, grid_box is not None


def is_hit(iou: float) -> bool:
    """IoU >= 0.5 (a NaN IoU is a miss, as ``nan >= 0.5`` is false in the original)."""
    return not math.isnan(iou) and iou >= IOU_THRESHOLD
