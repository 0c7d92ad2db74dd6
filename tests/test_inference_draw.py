"""Drawing boxes and quads where their coordinates say, labels, fonts, and the latest-picture rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from inference_fixtures import write_image
from qwenvl_train.format.markup import parse_groundings
from qwenvl_train.inference import draw
from qwenvl_train.inference.draw import PALETTE, draw_bbox_on_latest_picture, draw_groundings

WHITE = (255, 255, 255)


def assert_box_drawn(
    image: Image.Image, box: tuple[int, int, int, int], colour: tuple[int, int, int]
) -> None:
    """The outline of the pixel box ``(x1, y1, x2, y2)`` has ``colour`` along its four edges (away from the label
    in the top-left corner), and the image is untouched just inside and just outside the edges."""
    x1, y1, x2, y2 = box
    mx, my = (x1 + x2) // 2, (y1 + y2) // 2
    for xy in ((x2 - 5, y1), (mx, y2), (x1, my), (x2, my), (x2, y1 + 3), (mx, y2 - 1)):
        assert image.getpixel(xy) == colour, xy
    for xy in ((mx, my), (x1 + 5, my), (x2 - 5, my), (mx, y2 - 5), (x2 + 4, my), (mx, y2 + 4), (x1 - 4, my)):
        assert image.getpixel(xy) == WHITE, xy


def test_a_box_is_drawn_where_its_coordinates_say() -> None:
    image = Image.new("RGB", (200, 100), WHITE)
    out = draw_groundings(image, parse_groundings("<ref>the thing</ref><box>(250,200),(750,800)</box>"))
    assert image.getpixel((50, 50)) == WHITE  # the input is not modified
    # x: int(250 / 1000 * 200) = 50 .. 150; y: int(200 / 1000 * 100) = 20 .. 80.
    assert_box_drawn(out, (50, 20, 150, 80), PALETTE[0])
    # The label sits on a patch filled with the box's colour right above its top-left corner (white text on it).
    assert out.getpixel((51, 18)) == PALETTE[0] and out.getpixel((49, 18)) == WHITE


def test_each_ref_gets_a_colour_its_chain_shares_and_malformed_boxes_are_skipped() -> None:
    image = Image.new("RGB", (400, 400), WHITE)
    text = (
        "<ref>a</ref><box>(100,500),(200,600)</box><box>(300,500),(400,600)</box>"
        "<ref>b</ref><box>(600,500),(700,600)</box><box>(1,2),(3</box> then <box>(800,800),(900,900)</box>"
    )
    out = draw_groundings(image, parse_groundings(text))
    assert_box_drawn(out, (40, 200, 80, 240), PALETTE[0])
    assert_box_drawn(out, (120, 200, 160, 240), PALETTE[0])  # same ref: same colour
    assert_box_drawn(out, (240, 200, 280, 240), PALETTE[1])
    assert_box_drawn(out, (320, 320, 360, 360), PALETTE[2])  # after free text: a box of its own, a new colour


def test_a_quad_is_drawn_as_its_polygon() -> None:
    out = draw_groundings(
        Image.new("RGB", (100, 100), WHITE),
        parse_groundings("<quad>(200,200),(800,200),(800,800),(200,800)</quad>"),
    )
    assert out.getpixel((50, 20)) == PALETTE[0] and out.getpixel((80, 50)) == PALETTE[0]
    assert out.getpixel((50, 50)) == WHITE


def test_draw_bbox_on_latest_picture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "old.png", (200, 100))
    write_image(tmp_path / "new.png", (300, 150))
    history = [
        ("Picture 1: <img>old.png</img>\nWhere?", "there"),
        ("Picture 2: <img>new.png</img>\nAnd?", "x"),
    ]
    answer = "<ref>it</ref><box>(250,200),(750,800)</box>"
    image = draw_bbox_on_latest_picture(answer, history)
    assert image.size == (300, 150)
    assert_box_drawn(image, (75, 30, 225, 120), PALETTE[0])
    assert draw_bbox_on_latest_picture(answer, history[:1]).size == (200, 100)
    assert draw_bbox_on_latest_picture("no box", history) is None
    assert draw_bbox_on_latest_picture("<box>(1,2),(3</box>", history) is None
    assert draw_bbox_on_latest_picture(answer, [("no picture", "none")]) is None


def test_labels_use_an_installed_cjk_font_else_pillow_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import ImageFont

    monkeypatch.setattr(draw, "CJK_FONT_PATHS", ())
    monkeypatch.setattr(draw, "_fontconfig_cjk_fonts", lambda: [])
    monkeypatch.delenv(draw.FONT_ENV, raising=False)
    draw.find_cjk_font.cache_clear()
    try:
        assert draw.find_cjk_font() is None
        default = draw.load_font(20)
        assert isinstance(default, (ImageFont.ImageFont, ImageFont.FreeTypeFont))
        out = draw_groundings(
            Image.new("RGB", (200, 100), WHITE),
            parse_groundings("<ref>红色方块</ref><box>(250,200),(750,800)</box>"),
        )
        assert_box_drawn(out, (50, 20, 150, 80), PALETTE[0])
        # The file named by the environment variable comes first; one Pillow cannot read falls back to the default.
        bad_font = tmp_path / "font.ttf"
        bad_font.write_bytes(b"not a font")
        monkeypatch.setenv(draw.FONT_ENV, str(bad_font))
        draw.find_cjk_font.cache_clear()
        assert draw.find_cjk_font() == str(bad_font)
        assert type(draw.load_font(20)) is type(default)
        monkeypatch.setenv(draw.FONT_ENV, str(tmp_path / "missing.ttf"))
        draw.find_cjk_font.cache_clear()
        assert draw.find_cjk_font() is None
    finally:
        draw.find_cjk_font.cache_clear()
