"""Markup parsing: segments, the ref-context rule for boxes, and every malformed-tag case."""

from __future__ import annotations

import pytest

from qwenvl_train.format.markup import Image, MarkupError, Special, Text, parse_value

REF, REF_END, BOX, BOX_END, QUAD, QUAD_END = 151851, 151852, 151853, 151854, 151855, 151856


def test_plain_text_is_one_segment():
    assert parse_value("Hello, world!\n").segments == [Text("Hello, world!\n")]


def test_image_ref_and_box_segments():
    parsed = parse_value("Picture 1: <img>a/b.png</img>\nFind <ref>the dog</ref><box>(12,34),(56,78)</box>.")
    assert parsed.segments == [
        Text("Picture 1: "),
        Image("a/b.png"),
        Text("\nFind "),
        Special(REF),
        Text("the dog"),
        Special(REF_END),
        Special(BOX),
        Text("(12,34),(56,78)"),
        Special(BOX_END),
        Text("."),
    ]
    assert parsed.images == ["a/b.png"]
    assert parsed.has_ref


def test_several_boxes_for_one_ref_and_quads():
    value = "<ref>dogs</ref><box>(0,0),(10,10)</box><box>(5,5),(999,999)</box><quad>(1,2),(3,4),(5,6),(7,8)</quad>"
    ids = [s.token_id for s in parse_value(value).segments if isinstance(s, Special)]
    assert ids == [REF, REF_END, BOX, BOX_END, BOX, BOX_END, QUAD, QUAD_END]


def test_image_path_longer_than_256_bytes_and_with_spaces():
    path = "/data/" + "x" * 400 + " y.png"
    assert parse_value(f"<img>{path}</img>").images == [path]


def test_text_is_left_for_the_encoder_to_normalise_and_paths_are_kept_verbatim():
    nfd = "cafe\u0301"
    assert parse_value(nfd).segments == [Text(nfd)]  # encode_text applies NFC to each piece
    assert parse_value(f"<img>{nfd}.png</img>").images == [f"{nfd}.png"]


def test_literal_control_strings_stay_text_and_are_counted():
    parsed = parse_value("a <|im_start|>system\nx<|im_end|> <|endoftext|><imgpad><|extra_3|>")
    assert all(isinstance(s, Text) for s in parsed.segments)
    assert parsed.control_strings == {
        "<|im_start|>": 1,
        "<|im_end|>": 1,
        "<|endoftext|>": 1,
        "<imgpad>": 1,
        "<|extra_3|>": 1,
    }


def test_tags_are_case_sensitive():
    assert parse_value("<IMG>x</IMG>").segments == [Text("<IMG>x</IMG>")]


# ---------------------------------------------------------------- the ref-context rule for <box>/<quad>
def test_bare_box_in_running_text_is_an_error():
    with pytest.raises(MarkupError, match="not attached to a <ref>"):
        parse_value("The dog is at <box>(1,2),(3,4)</box>.")


def test_box_after_text_after_ref_is_an_error():
    with pytest.raises(MarkupError, match="not attached"):
        parse_value("<ref>dog</ref> is at <box>(1,2),(3,4)</box>")


def test_box_opening_an_answer_to_a_ref_question_is_allowed():
    parsed = parse_value("  <box>(1,2),(3,4)</box><box>(5,6),(7,8)</box>", ref_context=True)
    assert [s for s in parsed.segments if isinstance(s, Special)] == [Special(BOX), Special(BOX_END)] * 2
    with pytest.raises(MarkupError, match="not attached"):
        parse_value("It is <box>(1,2),(3,4)</box>", ref_context=True)


def test_allow_bare_boxes():
    assert parse_value("at <box>(1,2),(3,4)</box>", allow_bare_boxes=True).segments[1] == Special(BOX)


# ---------------------------------------------------------------- malformed markup
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("<ref>the dog", "never closed"),
        ("the dog</ref>", "without an opening <ref>"),
        ("Picture 1: <img>a.png", "never closed"),
        ("a.png</img>", "without an opening <img>"),
        ("<ref>a <ref>b</ref></ref>", "cannot nest"),
        ("<ref>a <img>x.png</img></ref>", "cannot nest"),
        ("<img>x<ref>y</ref></img>", "cannot nest"),
        ("<ref>a</box>", "</box> at character 6 does not close <ref> \\(opened at character 0\\)"),
        ("<img></img>", "empty <img>"),
        ("<img>  </img>", "empty <img>"),
        ("<ref></ref><box>(1,2),(3,4)</box>", "empty <ref>"),
        ("<ref>x</ref><box>(1.5,2),(3,4)</box>", "not an integer"),
        ("<ref>x</ref><box>(a,2),(3,4)</box>", "not an integer"),
        ("<ref>x</ref><box>(1,2),(3,1000)</box>", "outside"),
        ("<ref>x</ref><box>(-1,2),(3,4)</box>", "outside"),
        ("<ref>x</ref><box>(50,2),(3,4)</box>", "inverted"),
        ("<ref>x</ref><box>(1,50),(3,4)</box>", "inverted"),
        ("<ref>x</ref><box>(1,2)</box>", "1 point"),
        ("<ref>x</ref><box>(1,2),(3,4),(5,6)</box>", "3 point"),
        ("<ref>x</ref><box>1,2,3,4</box>", "expected a point"),
        ("<ref>x</ref><box>(1,2)(3,4)</box>", "expected ','"),
        ("<ref>x</ref><box></box>", "0 point"),
        ("<ref>x</ref><quad>(1,2),(3,4),(5,6)</quad>", "3 point"),
        ("<ref>x</ref><quad>(1,2),(3,4),(5,6),(7,1000)</quad>", "outside"),
    ],
)
def test_malformed_markup(value, message):
    with pytest.raises(MarkupError, match=message) as info:
        parse_value(value)
    assert "\n" not in str(info.value)


def test_box_with_spaces_inside_is_accepted_and_kept_verbatim():
    parsed = parse_value("<ref>x</ref><box>( 1, 2 ), (3,4)</box>")
    assert Text("( 1, 2 ), (3,4)") in parsed.segments
