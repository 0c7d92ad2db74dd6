"""Pictures of a report: an image with boxes and quads drawn in given colours and labelled, saved beside the page.

Coordinates are Qwen-VL's [0, 1000) mapped to the saved picture's pixels by
:func:`qwenvl_train.format.boxes.to_pixels` (the one inverse). A large picture is shrunk first (longest side
``MAX_SIDE``) and the boxes are mapped to the shrunk size, so they sit where they sat on the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..format.boxes import to_pixels
from ..format.markup import Grounding

MAX_SIDE = 640  # longest side of a saved picture, in pixels
#: Colours of the eval report: reference boxes, predicted boxes.
REFERENCE = (20, 160, 40)
PREDICTED = (220, 30, 200)


@dataclass(frozen=True)
class Drawn:
    """One box or quad to draw: its points in [0, 1000), its colour, and the label written above it (or None;
    ``below``: under it, so that a prediction's label does not hide the reference's)."""

    kind: str
    points: tuple[tuple[int, int], ...]
    colour: tuple[int, int, int]
    label: str | None
    below: bool = False


def drawn(
    groundings: Sequence[Grounding], colour: tuple[int, int, int] | None = None, below: bool = False
) -> list[Drawn]:
    """The well-formed groundings as :class:`Drawn` s: labelled with their ref where a chain starts, in ``colour``
    (or one palette colour per ref when None, as chat's drawing), labels under the boxes when ``below``."""
    from ..inference.draw import PALETTE

    out: list[Drawn] = []
    index = -1
    for grounding in groundings:
        if grounding.points is None:
            continue
        if grounding.ref is None or grounding.follows_ref:
            index += 1
        label = grounding.ref if grounding.ref and grounding.follows_ref else None
        chosen = colour or PALETTE[index % len(PALETTE)]
        out.append(Drawn(grounding.kind, grounding.points, chosen, label, below))
    return out


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def save_picture(ref: str, base_dir: str | Path | None, boxes: Sequence[Drawn], out: Path) -> str | None:
    """Load the image ``ref`` (relative to ``base_dir``), draw ``boxes`` on it and save it as ``out`` (PNG).

    Returns:
        None when saved, else the one line saying why not (the image cannot be read); never raises for the image.
    """
    from PIL import Image, ImageDraw

    from ..data.errors import ImageError
    from ..data.images import load_image, resolve_image
    from ..inference.draw import load_font

    try:
        image = load_image(resolve_image(ref, base_dir))
    except (ImageError, OSError, ValueError) as exc:
        return f"picture {ref}: {exc}"
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    width, height = image.size
    draw = ImageDraw.Draw(image)
    line = max(2, round(min(width, height) / 150))
    font = load_font(max(12, min(width, height) // 25))
    labels: list[tuple[tuple[int, int, int], str, tuple[int, int, int], bool]] = []
    for box in boxes:
        pixels = to_pixels(box.points, width, height)
        if box.kind == "box":
            draw.rectangle(pixels, outline=box.colour, width=line)
        else:
            draw.polygon(pixels, outline=box.colour, width=line)
        if box.label:
            ys = [y for _, y in pixels]
            corner = (min(x for x, _ in pixels), min(ys), max(ys))
            labels.append((corner, box.label, box.colour, box.below))
    placed: list[tuple[int, int, int, int]] = []
    for (x, y_top, y_bottom), label, colour, below in labels:  # labels last: no box drawn over a label
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        text_w, text_h = right - left + 2 * line, bottom - top + 2 * line
        x = max(0, min(x, width - text_w))  # inside the picture
        above, under = y_top - text_h, y_bottom  # outside the box, where there is room
        inside_top, inside_bottom = y_top, y_bottom - text_h
        order = (
            (under, above, inside_bottom, inside_top) if below else (above, under, inside_top, inside_bottom)
        )
        spots = [y for y in order if 0 <= y <= height - text_h] or [max(0, min(order[0], height - text_h))]
        # the first spot that does not cover a label already written, else the preferred one
        y = next(
            (y for y in spots if not any(_overlap((x, y, x + text_w, y + text_h), p) for p in placed)),
            spots[0],
        )
        placed.append((x, y, x + text_w, y + text_h))
        draw.rectangle(placed[-1], fill=colour)
        draw.text((x + line - left, y + line - top), label, fill=(255, 255, 255), font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return None
