"""Scoring answers: IoU, matching predicted boxes to reference boxes, metrics (moved from test_inference_boxes.py
with the reading of boxes going to the format package)."""

from __future__ import annotations

import pytest

from qwenvl_train.format.markup import parse_groundings
from qwenvl_train.inference.metrics import iou, match_boxes, normalize_text, score_answer, summarize


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
