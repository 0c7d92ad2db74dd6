"""Draw the boxes and quads of an answer on its picture (``tokenizer.draw_bbox_on_latest_picture``).

Coordinates are scaled from [0, 1000) to pixels by :func:`qwenvl_train.format.boxes.to_pixels`, as the original
did (``int(x / 1000 * width)``). Each ref starts a new colour (its chain of boxes shares it) and is written above
its first box. :func:`draw_boxes` is the one drawing of boxes: the picture reports (``check-data --report``,
``eval --report``) draw with it too. Labels use a font with CJK glyphs when one is installed (``$QWENVL_TRAIN_FONT``, then fontconfig's
fonts covering Chinese, then a few usual paths), Pillow's default font otherwise; nothing is ever downloaded (the
original fetched SimSun from the network at import and drew with matplotlib).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..format.boxes import to_pixels
from ..format.markup import Grounding, latest_image, parse_groundings

if TYPE_CHECKING:
    from PIL import Image, ImageFont

#: Matplotlib's "tableau" colours, which the original chose from.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
FONT_ENV = "QWENVL_TRAIN_FONT"
CJK_FONT_PATHS: tuple[str, ...] = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simsun.ttc",
)


def _fontconfig_cjk_fonts() -> list[str]:
    """Font files fontconfig says cover Chinese, its preferred sans-serif one first."""
    if not (shutil.which("fc-list") and shutil.which("fc-match")):
        return []
    try:
        listed = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10
        ).stdout
        preferred = subprocess.run(
            ["fc-match", "-f", "%{file}", "sans-serif:lang=zh"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return []
    files = sorted(line.split(":")[0].strip() for line in listed.splitlines() if line.strip())
    return ([preferred] if preferred in files else []) + files


@functools.lru_cache(maxsize=1)
def find_cjk_font() -> str | None:
    """Path of an installed font with CJK glyphs, or None (see the module docstring for the search order)."""
    candidates = [os.environ.get(FONT_ENV, ""), *_fontconfig_cjk_fonts(), *CJK_FONT_PATHS]
    return next((path for path in candidates if path and os.path.isfile(path)), None)


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A font of ``size`` pixels: the CJK font found, else Pillow's default."""
    from PIL import ImageFont

    path = find_cjk_font()
    if path is not None:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            pass  # unreadable font file: fall back to the default below
    return ImageFont.load_default(size=size)


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


def draw_boxes(image: Image.Image, boxes: Sequence[Drawn]) -> None:
    """Draw ``boxes`` on ``image`` (RGB, in place): the one drawing of boxes, chat's and the reports'.

    Coordinates are scaled to the image's pixels by :func:`qwenvl_train.format.boxes.to_pixels`. Labels are written
    last, so no box covers one: above their box where there is room, else under it, else inside, at the first of
    those places that covers no label already written, and always inside the picture.
    """
    from PIL import ImageDraw

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


def draw_groundings(image: Image.Image, groundings: Sequence[Grounding]) -> Image.Image:
    """A copy of ``image`` (RGB) with every well-formed box and quad drawn, refs written above their first box."""
    canvas = image.convert("RGB")
    draw_boxes(canvas, drawn(groundings))
    return canvas


def draw_bbox_on_latest_picture(
    response: str, history: Sequence[tuple[str, str | None]] | None = None
) -> Image.Image | None:
    """The latest picture (see :func:`qwenvl_train.format.markup.latest_image`) with the response's boxes drawn on it, or None
    when there is no picture or no well-formed box. A relative path is read from the current directory.

    Raises:
        qwenvl_train.data.errors.ImageError: the picture cannot be read.
    """
    from ..data.images import load_image, resolve_image

    ref = latest_image(response, list(history or []))
    groundings = [g for g in parse_groundings(response) if not g.malformed]
    if ref is None or not groundings:
        return None
    return draw_groundings(load_image(resolve_image(ref, None)), groundings)
