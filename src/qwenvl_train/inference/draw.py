"""Draw the boxes and quads of an answer on its picture (``tokenizer.draw_bbox_on_latest_picture``).

Coordinates are scaled from [0, 1000) to pixels by :func:`qwenvl_train.format.boxes.to_pixels`, as the original
did (``int(x / 1000 * width)``). Each ref starts a new colour (its chain of boxes shares it) and is written above
its first box. Labels use a font with CJK glyphs when one is installed (``$QWENVL_TRAIN_FONT``, then fontconfig's
fonts covering Chinese, then a few usual paths), Pillow's default font otherwise; nothing is ever downloaded (the
original fetched SimSun from the network at import and drew with matplotlib).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
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


def draw_groundings(image: Image.Image, groundings: Sequence[Grounding]) -> Image.Image:
    """A copy of ``image`` (RGB) with every well-formed box and quad drawn, refs written above their first box."""
    from PIL import ImageDraw

    canvas = image.convert("RGB")
    width, height = canvas.size
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(min(width, height) / 150))
    font = load_font(max(12, min(width, height) // 25))
    colour_index = -1
    for grounding in groundings:
        if grounding.points is None:
            continue
        if grounding.ref is None or grounding.follows_ref:  # a new ref (or a box of its own): a new colour
            colour_index += 1
        colour = PALETTE[colour_index % len(PALETTE)]
        pixels = to_pixels(grounding.points, width, height)
        if grounding.kind == "box":
            draw.rectangle(pixels, outline=colour, width=line)
        else:
            draw.polygon(pixels, outline=colour, width=line)
        if grounding.ref and grounding.follows_ref:
            x, y = min(x for x, _ in pixels), min(y for _, y in pixels)
            left, top, right, bottom = draw.textbbox((0, 0), grounding.ref, font=font)
            text_h = bottom - top + 2 * line
            y = y - text_h if y - text_h >= 0 else y  # above the box when there is room
            draw.rectangle((x, y, x + right - left + 2 * line, y + text_h), fill=colour)
            draw.text((x + line - left, y + line - top), grounding.ref, fill=(255, 255, 255), font=font)
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
