"""Scoring an answer against its reference: grounding IoU for box answers, exact match for the others.

- A reference holding at least one box or quad is a *box answer*. Each of its boxes is matched to one predicted
  box: first by ref text (the first unused prediction whose ``<ref>`` equals the reference's, compared after
  :func:`normalize_text`), then the references left are matched in order with the predictions left. Its score
  is the IoU with the match, 0 without one or when the prediction is malformed. Acc@0.5 is the share of
  reference boxes with IoU >= 0.5, mean IoU their average (over all boxes of all samples). A quad is scored by
  the rectangle enclosing it. Other text in a box answer is not scored.
- Any other answer is scored by exact match after :func:`normalize_text` (Unicode NFKC, case folded,
  whitespace collapsed, sentence punctuation at the end dropped).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..format.markup import Grounding, parse_groundings

IOU_THRESHOLD = 0.5
_TRAILING_PUNCTUATION = ".。!！?？"
Box = tuple[int, int, int, int]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (two equal empty boxes: 1.0)."""
    inter_w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if union <= 0:
        return 1.0 if tuple(a) == tuple(b) else 0.0
    return inter / union


def normalize_text(text: str) -> str:
    """NFKC, case folded, whitespace collapsed, trailing ``.!?`` (and full-width forms) removed."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return text.rstrip(_TRAILING_PUNCTUATION).rstrip()


@dataclass
class BoxScore:
    """One reference box and what it was matched with.

    Attributes:
        ref: the reference's ref text, or None.
        reference: the reference box ``[x1, y1, x2, y2]``.
        predicted: the matched prediction's box, None when unmatched or malformed.
        predicted_raw: the matched prediction as written (e.g. a malformed body), None when unmatched.
        matched_by: ``"ref"``, ``"order"`` or None (no prediction left).
        iou: the IoU (0 when unmatched or malformed).
    """

    ref: str | None
    reference: list[int]
    predicted: list[int] | None
    predicted_raw: str | None
    matched_by: str | None
    iou: float


@dataclass
class AnswerScore:
    """The score of one answer.

    Attributes:
        kind: ``"box"`` or ``"text"``.
        boxes: per reference box (box answers).
        exact_match: text answers only.
        predicted_boxes: boxes and quads in the prediction.
        malformed_boxes: of those, how many could not be read.
    """

    kind: str
    boxes: list[BoxScore] = field(default_factory=list)
    exact_match: bool | None = None
    predicted_boxes: int = 0
    malformed_boxes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def match_boxes(predicted: Sequence[Grounding], reference: Sequence[Grounding]) -> list[BoxScore]:
    """Match every reference box with a prediction, by ref text then by order (see the module docstring)."""
    matches: list[tuple[int, str] | None] = [None] * len(reference)
    used: set[int] = set()
    for i, ref in enumerate(reference):
        if not ref.ref:
            continue
        wanted = normalize_text(ref.ref)
        for j, pred in enumerate(predicted):
            if j not in used and pred.ref and normalize_text(pred.ref) == wanted:
                matches[i] = (j, "ref")
                used.add(j)
                break
    left = iter([j for j in range(len(predicted)) if j not in used])
    for i in range(len(reference)):
        if matches[i] is None and (j := next(left, None)) is not None:
            matches[i] = (j, "order")
    scores = []
    for ref, match in zip(reference, matches, strict=True):
        ref_box = ref.box
        assert ref_box is not None  # references are checked well-formed by the caller
        pred = predicted[match[0]] if match else None
        pred_box = pred.box if pred else None
        scores.append(
            BoxScore(
                ref=ref.ref,
                reference=list(ref_box),
                predicted=list(pred_box) if pred_box else None,
                predicted_raw=pred.raw if pred else None,
                matched_by=match[1] if match else None,
                iou=iou(pred_box, ref_box) if pred_box else 0.0,
            )
        )
    return scores


def reference_groundings(reference: str) -> list[Grounding]:
    """The boxes of a reference answer.

    Raises:
        ValueError: a box or quad of the reference is malformed (the data is wrong, not the model).
    """
    groundings = parse_groundings(reference)
    bad = next((g for g in groundings if g.malformed), None)
    if bad is not None:
        raise ValueError(f"the reference answer has a malformed <{bad.kind}>{bad.raw}</{bad.kind}>")
    return groundings


def score_answer(prediction: str, reference: str) -> AnswerScore:
    """Score ``prediction`` against ``reference`` (see the module docstring). Never raises on the prediction.

    Raises:
        ValueError: the reference holds a malformed box.
    """
    ref_boxes = reference_groundings(reference)
    if not ref_boxes:
        return AnswerScore("text", exact_match=normalize_text(prediction) == normalize_text(reference))
    predicted = parse_groundings(prediction)
    return AnswerScore(
        "box",
        boxes=match_boxes(predicted, ref_boxes),
        predicted_boxes=len(predicted),
        malformed_boxes=sum(g.malformed for g in predicted),
    )


def summarize(scores: Iterable[AnswerScore]) -> dict[str, float | int]:
    """Totals over answers: ``acc@0.5`` and ``mean_iou`` over reference boxes, ``exact_match`` over text
    answers (each only when there is something to average), and the counts."""
    scores = list(scores)
    ious = [box.iou for score in scores if score.kind == "box" for box in score.boxes]
    exact = [bool(score.exact_match) for score in scores if score.kind == "text"]
    out: dict[str, float | int] = {
        "samples": len(scores),
        "box_samples": sum(score.kind == "box" for score in scores),
        "boxes": len(ious),
        "text_samples": len(exact),
        "malformed_boxes": sum(score.malformed_boxes for score in scores),
    }
    if ious:
        out[f"acc@{IOU_THRESHOLD:g}"] = sum(value >= IOU_THRESHOLD for value in ious) / len(ious)
        out["mean_iou"] = sum(ious) / len(ious)
    if exact:
        out["exact_match"] = sum(exact) / len(exact)
    return out
