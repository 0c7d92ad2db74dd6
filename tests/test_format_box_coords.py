"""Box coordinates (format/boxes.py): pixel corners, x/y/width/height and [0, 1] boxes to Qwen-VL's [0, 1000)
integers, each conversion computed by hand here; the errors; the inverse; and the markup writers."""

from __future__ import annotations

import pytest

from qwenvl_train.format.boxes import BoxError, to_pixels, to_qwen_box
from qwenvl_train.format.markup import (
    MarkupError,
    box_markup,
    grounding_markup,
    image_markup,
    parse_value,
    ref_markup,
)


@pytest.mark.parametrize(
    ("box", "kind", "size", "expected"),
    [
        # 1000 * 64 / 640 = 100; 1000 * 48 / 480 = 100; 1000 * 320 / 640 = 500; 1000 * 240 / 480 = 500.
        ([64, 48, 320, 240], "xyxy", (640, 480), (100, 100, 500, 500)),
        # The same box as x, y, width, height: x2 = 64 + 256 = 320, y2 = 48 + 192 = 240.
        ([64, 48, 256, 192], "xywh", (640, 480), (100, 100, 500, 500)),
        # Read as corners, [64, 48, 256, 192] is another box: 1000 * 256 / 640 = 400, 1000 * 192 / 480 = 400.
        ([64, 48, 256, 192], "xyxy", (640, 480), (100, 100, 400, 400)),
        # Rounded down: 1000 * 10 / 300 = 33.3 -> 33; 1000 * 299 / 300 = 996.7 -> 996.
        ([10, 10, 299, 299], "xyxy", (300, 300), (33, 33, 996, 996)),
        # The right and bottom edges are 1000 * 300 / 300 = 1000: clamped to 999.
        ([150, 0, 300, 300], "xyxy", (300, 300), (500, 0, 999, 999)),
        ([0, 100, 300, 200], "xywh", (300, 300), (0, 333, 999, 999)),
        # Pixel coordinates may be fractions (COCO writes floats): 1000 * 12.5 / 100 = 125.
        ([12.5, 0.5, 50.25, 99.9], "xyxy", (100, 100), (125, 5, 502, 999)),
        # [0, 1] boxes: 0.3 is three tenths (the float just under 0.3 would give 299), 1.0 clamps to 999.
        ([0.3, 0.25, 1.0, 1], "norm1", (640, 480), (300, 250, 999, 999)),
        ([0, 0, 0.0015, 0.5], "norm1", (10, 10), (0, 0, 1, 500)),
    ],
)
def test_boxes_convert_as_computed_by_hand(box, kind, size, expected) -> None:
    assert to_qwen_box(box, kind, *size) == expected


@pytest.mark.parametrize(
    ("box", "kind", "message"),
    [
        ([10, 10, 5, 20], "xyxy", "xyxy box [10, 10, 5, 20]: x2 < x1 (corners the wrong way round)"),
        ([10, 30, 20, 20], "xyxy", "xyxy box [10, 30, 20, 20]: y2 < y1 (corners the wrong way round)"),
        ([10, 10, -5, 20], "xywh", "xywh box [10, 10, -5, 20]: negative width"),
        ([10, 10, 10, 20], "xyxy", "xyxy box [10, 10, 10, 20]: zero area"),
        ([10, 10, 5, 0], "xywh", "xywh box [10, 10, 5, 0]: zero area"),
        ([-1, 10, 20, 20], "xyxy", "xyxy box [-1, 10, 20, 20]: outside the 100x50 image"),
        ([10, 10, 20, 50.5], "xyxy", "xyxy box [10, 10, 20, 50.5]: outside the 100x50 image"),
        ([90, 10, 11, 20], "xywh", "xywh box [90, 10, 11, 20]: outside the 100x50 image"),
        ([0.5, 0.5, 1.2, 0.9], "norm1", "norm1 box [0.5, 0.5, 1.2, 0.9]: outside [0, 1]"),
        ([1, 2, 3], "xyxy", "box [1, 2, 3] is not a list of four numbers"),
        ("1,2,3,4", "xyxy", "box '1,2,3,4' is not a list of four numbers"),
        ([1, 2, "3", 4], "xyxy", "xyxy box [1, 2, '3', 4]: coordinate 3 is '3', expected a number"),
        ([1, 2, float("nan"), 4], "xyxy", "xyxy box [1, 2, nan, 4]: coordinate 3 is nan, expected a finite"),
        ([1, 2, 3, 4], "cxcywh", "unknown box kind 'cxcywh' (expected one of xyxy, xywh, norm1)"),
    ],
)
def test_bad_boxes_are_one_line_errors(box, kind, message) -> None:
    with pytest.raises(BoxError) as info:
        to_qwen_box(box, kind, 100, 50)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_the_inverse_is_the_original_scaling() -> None:
    # int(100 / 1000 * 640) = 64, int(999 / 1000 * 480) = int(479.52) = 479.
    assert to_pixels([(100, 100), (999, 999)], 640, 480) == [(64, 48), (639, 479)]
    # Pixels -> Qwen-VL -> pixels lands within one step (width / 1000) of where it started.
    qwen = to_qwen_box([64, 48, 320, 240], "xyxy", 640, 480)
    assert to_pixels([qwen[:2], qwen[2:]], 640, 480) == [(64, 48), (320, 240)]


def test_markup_is_written_through_the_format_and_reads_back() -> None:
    assert image_markup(2, "images/a b.png") == "Picture 2: <img>images/a b.png</img>\n"
    assert box_markup((1, 2, 30, 40)) == "<box>(1,2),(30,40)</box>"
    assert ref_markup("the dog") == "<ref>the dog</ref>"
    text = grounding_markup("dogs", [(1, 2, 30, 40), (5, 6, 7, 8)])
    assert text == "<ref>dogs</ref><box>(1,2),(30,40)</box><box>(5,6),(7,8)</box>"
    assert grounding_markup(None, [(1, 2, 3, 4)]) == "<box>(1,2),(3,4)</box>"
    parsed = parse_value(image_markup(1, "a.png") + "Where? " + text)
    assert parsed.images == ["a.png"] and parsed.has_ref


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: image_markup(1, "a</img>.png"), "image path 'a</img>.png' holds the tag </img>"),
        (lambda: ref_markup("a <box> b"), "ref text 'a <box> b' holds the tag <box>"),
        (lambda: ref_markup("  "), "empty ref text"),
        (lambda: box_markup((1, 2, 1000, 4)), "coordinate 1000 is outside [0, 1000)"),
        (lambda: box_markup((5, 2, 1, 4)), "inverted corners"),
        (lambda: grounding_markup("a", []), "a grounding needs at least one box"),
    ],
)
def test_the_writers_refuse_what_would_not_read_back(call, message) -> None:
    with pytest.raises(
        MarkupError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        call()
