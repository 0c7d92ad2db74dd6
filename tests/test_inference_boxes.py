"""Reading boxes out of generated text (never raising), to_list_format, and scoring: IoU, matching, metrics."""

from __future__ import annotations

import pytest

from qwenvl_train import QwenVLTokenizer
from qwenvl_train.inference.boxes import latest_image, parse_groundings, to_list_format
from qwenvl_train.inference.metrics import iou, match_boxes, normalize_text, score_answer, summarize


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


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(4 / 100)
    assert iou((5, 5, 5, 5), (5, 5, 5, 5)) == 1.0 and iou((5, 5, 5, 5), (6, 6, 6, 6)) == 0.0


def test_matching_by_ref_text_then_by_order() -> None:
    reference = parse_groundings(
        "<ref>the cat</ref><box>(0,0),(100,100)</box><ref>the dog</ref><box>(500,500),(600,600)</box>"
    )
    # The prediction names them in the other order (and in other case): matched by ref text.
    swapped = parse_groundings(
        "<ref>The Dog</ref><box>(500,500),(600,600)</box><ref>the cat</ref><box>(0,0),(100,50)</box>"
    )
    scores = match_boxes(swapped, reference)
    assert [(s.matched_by, s.iou) for s in scores] == [("ref", 0.5), ("ref", 1.0)]
    # Without refs (the referring-expression answer format): by order.
    bare = parse_groundings("<box>(0,0),(100,100)</box><box>(0,0),(1,1)</box>")
    assert [(s.matched_by, s.iou) for s in match_boxes(bare, reference)] == [("order", 1.0), ("order", 0.0)]
    # One ref matches, the other reference takes the prediction left over, in order.
    mixed = parse_groundings(
        "<ref>a horse</ref><box>(500,500),(600,600)</box><ref>the cat</ref><box>(0,0),(100,100)</box>"
    )
    assert [(s.matched_by, s.iou) for s in match_boxes(mixed, reference)] == [("ref", 1.0), ("order", 1.0)]
    # Fewer predictions than references: the rest is unmatched, IoU 0.
    assert [(s.matched_by, s.iou) for s in match_boxes(bare[:1], reference)] == [("order", 1.0), (None, 0.0)]


def test_scoring_box_answers_malformed_ones_score_zero() -> None:
    reference = "<ref>the dog</ref><box>(100,100),(500,500)</box>"
    perfect = score_answer(reference, reference)
    assert perfect.kind == "box" and [b.iou for b in perfect.boxes] == [1.0]
    for bad in (
        "<ref>the dog</ref><box>(100,100),(500</box>",
        "<ref>the dog</ref><box>(100,100),(500,",
        "no box",
        "",
    ):
        score = score_answer(bad, reference)
        assert [b.iou for b in score.boxes] == [0.0], bad
    assert score_answer("<ref>the dog</ref><box>(1,1),(2</box>", reference).malformed_boxes == 1
    with pytest.raises(ValueError, match="reference answer has a malformed <box>"):
        score_answer("x", "<ref>a</ref><box>(1,2)</box>")


def test_exact_match_after_normalization() -> None:
    assert normalize_text("  It is  RED. ") == "it is red"
    assert normalize_text("红色。") == "红色" and normalize_text("ＡＢＣ！") == "abc"
    assert score_answer("it is red", "It is red.").exact_match is True
    assert score_answer("it is blue", "It is red.").exact_match is False


def test_summary_over_boxes_and_text_answers() -> None:
    scores = [
        score_answer("<box>(0,0),(10,10)</box>", "<ref>a</ref><box>(0,0),(10,10)</box>"),  # IoU 1
        score_answer(
            "<box>(0,0),(10,10)</box><box>(0,0),(1", "<box>(5,0),(15,10)</box><box>(0,0),(5,5)</box>"
        ),
        score_answer("Red.", "red"),
        score_answer("Blue", "red"),
    ]
    summary = summarize(scores)
    assert summary == {
        "samples": 4,
        "box_samples": 2,
        "boxes": 3,
        "text_samples": 2,
        "malformed_boxes": 1,
        "acc@0.5": pytest.approx(1 / 3),
        "mean_iou": pytest.approx((1 + 1 / 3 + 0) / 3),
        "exact_match": 0.5,
    }
    assert summarize([]) == {
        "samples": 0,
        "box_samples": 0,
        "boxes": 0,
        "text_samples": 0,
        "malformed_boxes": 0,
    }
