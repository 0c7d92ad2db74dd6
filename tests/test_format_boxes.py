"""The lenient reading of markup (what a model writes): boxes out of generated text (never raising), to_list_format,
latest_image. Scoring them is tested in test_inference_metrics.py."""

from __future__ import annotations

import pytest

from qwenvl_train import QwenVLTokenizer
from qwenvl_train.format.markup import latest_image, parse_groundings, to_list_format


def test_refs_own_their_chain_of_boxes_and_quads() -> None:
    text = (
        "Here: <ref>the dog</ref><box>(10,20),(30,40)</box> and <ref>two cats</ref><box>(1,2),(3,4)</box> "
        "<box>(5,6),(7,8)</box><quad>(1,1),(9,1),(9,9),(1,9)</quad>, then <box>(0,0),(999,999)</box>"
    )
    got = [(g.kind, g.ref, g.points, g.follows_ref) for g in parse_groundings(text)]
    assert got == [
        ("box", "the dog", ((10, 20), (30, 40)), True),
        ("box", "two cats", ((1, 2), (3, 4)), True),
        ("box", "two cats", ((5, 6), (7, 8)), False),
        ("quad", "two cats", ((1, 1), (9, 1), (9, 9), (1, 9)), False),
        ("box", None, ((0, 0), (999, 999)), False),
    ]
    assert parse_groundings(text)[3].box == (1, 1, 9, 9)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<box>( 10 , 20 ) , (30,40 )</box>", ((10, 20), (30, 40))),  # spaces are fine
        ("<box>(30,40),(10,20)</box>", ((10, 20), (30, 40))),  # corners put in order
        ("<box>(500,20),(1500,99999)</box>", ((500, 20), (1000, 1000))),  # clipped to [0, 1000]
        ("<box>(1,2),(3)</box>", None),  # three numbers
        ("<box>(1,2),(3,4),(5,6)</box>", None),
        ("<box>(-1,2),(3,4)</box>", None),
        ("<box>(1.5,2),(3,4)</box>", None),
        ("<box>(１,2),(3,4)</box>", None),  # a full-width digit
        ("<box></box>", None),
        ("<box>(1,2),(3,4)", None),  # generation stopped inside the box
        ("<quad>(1,2),(3,4)</quad>", None),
    ],
)
def test_malformed_and_partial_boxes_never_raise(text: str, expected) -> None:
    (grounding,) = parse_groundings(text)
    assert grounding.points == expected
    assert grounding.malformed == (expected is None)
    assert (grounding.box is None) == (expected is None)


def test_partial_and_stray_tags_are_text() -> None:
    assert parse_groundings("</box> <ref>a</ref> text <ref>b") == []
    # Generation stopped inside the second box of a chain: it is there, malformed, still owned by the ref.
    got = [(x.ref, x.points) for x in parse_groundings("<ref>a</ref><box>(1,2),(3,4)</box><box>(5,6),(7,")]
    assert got == [("a", ((1, 2), (3, 4))), ("a", None)]
    # An unclosed ref does not swallow the box after it.
    (g,) = parse_groundings("<ref>a <box>(1,2),(3,4)</box>")
    assert g.points == ((1, 2), (3, 4)) and g.ref is None


def test_to_list_format_matches_the_original_item_form() -> None:
    items = [{"image": "a b.png"}, {"text": "Where is it?"}, {"ref": "the dog", "box": [(1, 2, 30, 40)]}]
    text = QwenVLTokenizer.from_list_format(items)
    assert QwenVLTokenizer.to_list_format(text) == [
        {"text": "Picture 1: "},
        {"image": "a b.png"},
        {"text": "\nWhere is it?"},
        {"ref": "the dog"},
        {"box": "(1,2),(30,40)"},
    ]


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        "<ref>x</ref><box>(1,2),(3,4)</box> and <quad>(1,1),(2,2),(3,3),(4,4)</quad>",
        "a <box>(1,2) unfinished",
        "</ref>stray<img>never closed",
        "",
    ],
)
def test_joining_the_items_with_their_tags_gives_the_text_back(text: str) -> None:
    tags = {"image": "img"}
    joined = "".join(
        value if key == "text" else f"<{tags.get(key, key)}>{value}</{tags.get(key, key)}>"
        for item in to_list_format(text)
        for key, value in item.items()
    )
    assert joined == text


def test_latest_image_is_the_responses_then_the_newest_query() -> None:
    history = [("Picture 1: <img>old.png</img>\nhi", "ok"), ("no picture", "<img>answer.png</img>")]
    assert latest_image("<box>(1,2),(3,4)</box>", history) == "old.png"
    assert latest_image("see <img>a.png</img><img>b.png</img>", history) == "b.png"
    history.append(("<img>new1.png</img><img>new2.png</img>", "x"))
    assert latest_image("no image", history) == "new2.png"
    assert latest_image("nothing", [("none", "none")]) is None
