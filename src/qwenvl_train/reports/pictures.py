"""Pictures of a report: an image with boxes and quads drawn in given colours and labelled, saved beside the page.

The drawing is chat's (:func:`qwenvl_train.inference.draw.draw_boxes`, the one drawing of boxes). A large picture is
shrunk first (longest side ``MAX_SIDE``) and the boxes are mapped to the shrunk size, so they sit where they sat on
the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..inference.draw import Drawn, draw_boxes, drawn

__all__ = ["MAX_SIDE", "PREDICTED", "REFERENCE", "Drawn", "drawn", "save_picture"]

MAX_SIDE = 640  # longest side of a saved picture, in pixels
#: Colours of the eval report: reference boxes, predicted boxes.
REFERENCE = (20, 160, 40)
PREDICTED = (220, 30, 200)


def save_picture(ref: str, base_dir: str | Path | None, boxes: Sequence[Drawn], out: Path) -> str | None:
    """Load the image ``ref`` (relative to ``base_dir``), draw ``boxes`` on it and save it as ``out`` (PNG).

    Returns:
        None when saved, else the one line saying why not (the image cannot be read); never raises for the image.
    """
    from PIL import Image

    from ..data.errors import ImageError
    from ..data.images import load_image, resolve_image

    try:
        image = load_image(resolve_image(ref, base_dir))
    except (ImageError, OSError, ValueError) as exc:
        return f"picture {ref}: {exc}"
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    draw_boxes(image, boxes)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return None
