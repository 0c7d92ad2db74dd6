"""``qwenvl-train eval ... --report DIR``: the metrics table and a gallery of the answers, worst first.

Box answers come first, sorted by their IoU (the mean over the sample's reference boxes) from the worst, then text
answers, wrong ones first; each card shows the picture the question is about (the latest ``<img>`` of the
question, else of the history) with the reference boxes and the predicted boxes drawn in two colours and labelled
with their refs, the question, both answers and the IoU. At most ``--report-samples`` cards (the worst).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .page import ReportError

if TYPE_CHECKING:
    from ..format.markup import Grounding
    from ..inference.evaluate import EvalResult
    from .page import Page

DEFAULT_CARDS = 200


def sample_iou(result: EvalResult) -> float | None:
    """The mean IoU over the sample's reference boxes; None for a text answer."""
    boxes = result.score.boxes
    if result.score.kind != "box" or not boxes:
        return None
    return sum(box.iou for box in boxes) / len(boxes)


def worst_first(results: Sequence[EvalResult]) -> list[EvalResult]:
    """Box answers by IoU from the worst, then text answers, wrong ones first (file order otherwise)."""

    def key(item: tuple[int, EvalResult]) -> tuple[int, float, int]:
        position, result = item
        value = sample_iou(result)
        if value is not None:
            return 0, value, position
        return 1, float(bool(result.score.exact_match)), position

    return [result for _, result in sorted(enumerate(results), key=key)]


def _answer_groundings(query: str, answer: str) -> list[tuple[str | None, Grounding]]:
    """The answer's boxes with the picture each is on (a bare box labelled with the question's ref)."""
    from ..format.markup import groundings_by_picture, parse_groundings

    return groundings_by_picture([query, answer])[len(parse_groundings(query)) :]


def add_card(page: Page, result: EvalResult, number: int) -> int:
    """One answer's card; returns the pictures saved (0 or 1)."""
    from ..format.markup import latest_image
    from .pictures import PREDICTED, REFERENCE, drawn, save_picture

    sample = result.sample
    picture = latest_image(sample.query, list(sample.history))
    value = sample_iou(result)
    if value is not None:
        each = ", ".join(f"{box.iou:.3f}" for box in result.score.boxes)
        notes = [f"IoU {value:.3f}" + (f" (mean of {each})" if len(result.score.boxes) > 1 else "")]
    else:
        notes = [f"text answer, exact match: {'yes' if result.score.exact_match else 'no'}"]
    if result.score.malformed_boxes:
        notes.append(f"{result.score.malformed_boxes} malformed box(es) in the prediction (scored 0)")
    pictures: list[tuple[Path | None, str]] = []
    saved = 0
    if picture is not None:
        reference = [
            g for image, g in _answer_groundings(sample.query, sample.reference) if image in (None, picture)
        ]
        predicted = [
            g for image, g in _answer_groundings(sample.query, result.prediction) if image in (None, picture)
        ]
        boxes = drawn(reference, REFERENCE) + drawn(predicted, PREDICTED, below=True)
        out = page.images / f"answer-{number:04d}.png"
        why_not = save_picture(picture, Path(sample.file).parent, boxes, out)
        pictures.append((None, why_not) if why_not else (out, picture))
        saved = why_not is None
    turns: list[tuple[str, str]] = []
    for query, answer in sample.history:
        turns += [("user", query), ("assistant", answer)]
    turns += [("question", sample.query), ("reference", sample.reference), ("prediction", result.prediction)]
    tags = ["box" if value is not None else "text"]
    page.card(f"sample {sample.id!r} ({sample.file})", tags, pictures, turns, notes, error=False)
    return saved


def metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The table's rows: every metric in the order ``summarize`` gives them."""
    return [(name, value) for name, value in metrics.items()]


def write_eval_report(
    results: Sequence[EvalResult],
    metrics: Mapping[str, Any],
    skipped: Sequence[str],
    folder: str | Path,
    *,
    title: str = "eval report",
    cards: int = DEFAULT_CARDS,
) -> Path:
    """Write the eval report into ``folder``; returns ``index.html``.

    Raises:
        ReportError: the folder cannot be written.
    """
    from ..inference.evaluate import format_table
    from .page import Page
    from .pictures import PREDICTED, REFERENCE

    try:
        page = Page(folder, title)
        page.heading("Metrics")
        page.table(["metric", "value"], metric_rows(metrics))
        page.preformatted(format_table(dict(metrics)))
        if skipped:
            page.heading(f"Skipped ({len(skipped)})")
            page.errors(list(skipped))
        ordered = worst_first(results)
        shown = ordered[:cards]
        page.heading(f"Answers, worst first ({len(shown)} of {len(results)})")
        page.legend([("reference", REFERENCE), ("prediction", PREDICTED)])
        for number, result in enumerate(shown, start=1):
            add_card(page, result, number)
        return page.write()
    except OSError as exc:
        raise ReportError(f"eval --report {folder}: cannot write the report: {exc}") from None
