"""A loss-curve PNG drawn with Pillow (the demo needs no plotting library)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 30, 40


def draw_loss_curve(steps: Sequence[float], losses: Sequence[float], out: str | Path, title: str) -> Path:
    """Plot ``losses`` against ``steps`` (linear axes, min and max labelled) into ``out``; returns ``out``.

    Raises:
        ValueError: no points, or ``steps`` and ``losses`` of different lengths.
    """
    if not steps or len(steps) != len(losses):
        raise ValueError(f"need as many steps as losses (got {len(steps)} and {len(losses)}), at least one")
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    x0, x1 = min(steps), max(steps)
    y0, y1 = 0.0, max(losses)
    span_x, span_y = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def point(step: float, loss: float) -> tuple[float, float]:
        return LEFT + (step - x0) / span_x * plot_w, TOP + (1 - (loss - y0) / span_y) * plot_h

    draw.rectangle((LEFT, TOP, LEFT + plot_w, TOP + plot_h), outline=(120, 120, 120))
    for k in range(1, 4):  # light horizontal grid at quarters
        y = TOP + k * plot_h / 4
        draw.line((LEFT, y, LEFT + plot_w, y), fill=(225, 225, 225))
        draw.text((4, y - 6), f"{y1 * (1 - k / 4):.2f}", fill="black")
    draw.text((4, TOP - 6), f"{y1:.2f}", fill="black")
    draw.text((4, TOP + plot_h - 6), "0", fill="black")
    draw.text((LEFT, TOP + plot_h + 8), f"step {x0:g}", fill="black")
    draw.text((LEFT + plot_w - 70, TOP + plot_h + 8), f"step {x1:g}", fill="black")
    draw.text((LEFT, 8), title, fill="black")
    points = [point(s, v) for s, v in zip(steps, losses, strict=True)]
    if len(points) > 1:
        draw.line(points, fill=(30, 60, 220), width=2)
    for x, y in points:
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(30, 60, 220))
    image.save(out)
    return Path(out)
