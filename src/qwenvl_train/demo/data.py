"""``qwenvl-train demo-data OUT``: a deterministic grounding dataset that a tiny model learns in minutes.

    qwenvl-train demo-data runs/demo/data --n 2000 --seed 0

Each picture holds one coloured shape (circle, square or triangle) on a light background, placed on a coarse
``GRID`` x ``GRID`` grid of cells and one or two cells wide. The question names it ("Where is the red circle?")
and the answer is the original grounding markup ``<ref>the red circle</ref><box>(x1,y1),(x2,y2)</box>`` with
coordinates in [0, 1000), exactly the bounding box of the drawn pixels. Some samples are in Chinese, some are
multi-turn (what is in the picture, then where), some have two pictures (one question per picture, the box
belongs to the latest picture). ``OUT/train.json`` and ``OUT/heldout.json`` are written in the original
``conversations`` format, with the images under ``OUT/images/`` referenced by relative paths.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ..format.boxes import to_qwen_box
from ..format.markup import grounding_markup, image_markup

#: Cells per side of the position grid.
GRID = 4
#: Side of the saved pictures in pixels (the model resizes them to its own image size).
IMAGE_SIZE = 224
#: Empty pixels between a shape and the border of its cells.
MARGIN = 6
#: Shape sizes, in cells.
SIZES = (1, 2)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (20, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 0),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = ((250, 250, 250), (235, 235, 225), (225, 235, 245))

COLOURS_ZH = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色"}
SHAPES_ZH = {"circle": "圆", "square": "正方形", "triangle": "三角形"}

QUESTIONS_EN = ("Where is {name}?", "Find {name}.", "Locate {name} in the picture.")
QUESTIONS_ZH = ("{name}在哪里？", "找到{name}。")

#: Share of samples in Chinese, multi-turn (one picture), and with two pictures.
P_CHINESE = 0.15
P_MULTI_TURN = 0.1
P_TWO_IMAGES = 0.1


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its colour and kind, and its pixel bounds ``[x0, x1) x [y0, y1)``."""

    colour: str
    kind: str
    x0: int
    y0: int
    x1: int
    y1: int

    def box(self, size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
        """The bounds in the [0, 1000) coordinates of Qwen-VL's ``<box>``: ``(x1, y1, x2, y2)``
        (:func:`qwenvl_train.format.boxes.to_qwen_box`, as every importer converts pixel corners)."""
        return to_qwen_box((self.x0, self.y0, self.x1, self.y1), "xyxy", size, size)

    def name(self, chinese: bool) -> str:
        """``the red circle`` or ``红色的圆``."""
        if chinese:
            return f"{COLOURS_ZH[self.colour]}的{SHAPES_ZH[self.kind]}"
        return f"the {self.colour} {self.kind}"


def random_shape(rng: random.Random) -> Shape:
    """A shape of random colour, kind, size and grid position."""
    size = rng.choice(SIZES)
    col, row = rng.randrange(GRID - size + 1), rng.randrange(GRID - size + 1)
    cell = IMAGE_SIZE // GRID
    x0, y0 = col * cell + MARGIN, row * cell + MARGIN
    x1, y1 = (col + size) * cell - MARGIN, (row + size) * cell - MARGIN
    return Shape(rng.choice(list(COLOURS)), rng.choice(SHAPES), x0, y0, x1, y1)


def draw_shape(shape: Shape, background: tuple[int, int, int]) -> Image.Image:
    """The picture: ``shape`` drawn without anti-aliasing, so its pixels span exactly its bounds."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    draw = ImageDraw.Draw(image)
    fill = COLOURS[shape.colour]
    corners = (shape.x0, shape.y0, shape.x1 - 1, shape.y1 - 1)  # PIL bounds are inclusive
    if shape.kind == "circle":
        draw.ellipse(corners, fill=fill)
    elif shape.kind == "square":
        draw.rectangle(corners, fill=fill)
    else:
        apex = ((shape.x0 + shape.x1 - 1) // 2, shape.y0)
        draw.polygon([(shape.x0, shape.y1 - 1), (shape.x1 - 1, shape.y1 - 1), apex], fill=fill)
    return image


def grounding_answer(shape: Shape, chinese: bool) -> str:
    """``<ref>the red circle</ref><box>(x1,y1),(x2,y2)</box>``."""
    return grounding_markup(shape.name(chinese), [shape.box()])


def _picture(rng: random.Random, folder: Path, stem: str, index: int) -> tuple[str, Shape]:
    """Draw and save one picture; returns its path relative to the JSON file and its shape."""
    shape = random_shape(rng)
    relative = f"images/{stem}.png"
    draw_shape(shape, rng.choice(BACKGROUNDS)).save(folder / relative)
    return image_markup(index, relative), shape


def _question(rng: random.Random, shape: Shape, chinese: bool) -> str:
    return rng.choice(QUESTIONS_ZH if chinese else QUESTIONS_EN).format(name=shape.name(chinese))


def make_sample(rng: random.Random, folder: Path, sample_id: str) -> dict[str, Any]:
    """One conversation (and its pictures, saved under ``folder/images``)."""
    chinese = rng.random() < P_CHINESE
    kind = rng.random()
    turns: list[dict[str, str]] = []
    if kind < P_TWO_IMAGES:
        for index, suffix in ((1, "a"), (2, "b")):
            picture, shape = _picture(rng, folder, f"{sample_id}_{suffix}", index)
            turns.append({"from": "user", "value": picture + _question(rng, shape, chinese)})
            turns.append({"from": "assistant", "value": grounding_answer(shape, chinese)})
    elif kind < P_TWO_IMAGES + P_MULTI_TURN:
        picture, shape = _picture(rng, folder, sample_id, 1)
        what = "图中有什么？" if chinese else "What is in the picture?"
        seen = shape.name(chinese) if chinese else f"A {shape.colour} {shape.kind}."
        where = "它在哪里？" if chinese else "Where is it?"
        turns += [
            {"from": "user", "value": picture + what},
            {"from": "assistant", "value": seen},
            {"from": "user", "value": where},
            {"from": "assistant", "value": grounding_answer(shape, chinese)},
        ]
    else:
        picture, shape = _picture(rng, folder, sample_id, 1)
        turns.append({"from": "user", "value": picture + _question(rng, shape, chinese)})
        turns.append({"from": "assistant", "value": grounding_answer(shape, chinese)})
    return {"id": sample_id, "conversations": turns}


def write_demo_data(out: str | Path, n: int = 2000, n_heldout: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """Write ``n`` training and ``n_heldout`` held-out conversations (and their pictures) under ``out``.

    The same ``n``, ``n_heldout`` and ``seed`` give byte-identical files. Returns the paths of
    ``train.json`` and ``heldout.json``.
    """
    folder = Path(out)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for split, count, split_seed in (("train", n, seed), ("heldout", n_heldout, seed + 1_000_003)):
        rng = random.Random(split_seed)
        samples = [make_sample(rng, folder, f"{split}_{i:05d}") for i in range(count)]
        path = folder / f"{split}.json"
        path.write_text(json.dumps(samples, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]
