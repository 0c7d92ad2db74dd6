"""``qwenvl-train eval --benchmark NAME ... --report DIR``: one benchmark's result as a page.

The page is the eval report's (:mod:`.page`), filled from the dictionary ``eval_mm.scoring.score_benchmark``
returns: the counts and the metrics; the breakdowns the benchmark has (VQA answer and question types, SEED
dimensions, MME tasks with acc / acc+; for the RefCOCO family the IoU of the answers, as each split is its own
run) as tables and bar charts; then the worst answers, lowest score first (grounding: lowest IoU first among the
misses), each with its picture (grounding: the reference box and the predicted box drawn in the eval report's two
colours), the question, the reference(s) and the prediction. At most ``cards`` answers are shown.

A picture that cannot be read is a note on its card and a line in the list at the end; the page is still written.
Relative picture paths resolve against ``image_root`` (None: the current directory), as the generation opens them.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .page import ReportError

if TYPE_CHECKING:
    from .page import Page
    from .pictures import Drawn

DEFAULT_CARDS = 200
#: A breakdown chart shows at most this many labels (the lowest scores); its table shows them all.
MAX_CHART_ROWS = 30
#: The IoU buckets of the grounding breakdown: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0].
IOU_BINS = 10
#: Lines of unknown ids / skipped questions shown before "... and N more".
MAX_LISTED = 50
#: The counts of the result shown above the metrics, and how the page names them.
COUNTS = {
    "num_questions": "questions",
    "num_missing": "questions without a prediction (scored as wrong)",
    "num_unknown": "predictions for no question of --data (not used)",
    "num_skipped": "questions left out (--on-error skip)",
}
#: Breakdown keys of ``score_benchmark`` that hold ``{label: percent}`` and how the page names them.
GROUPED = {"answer_type": "answer type", "question_type": "question type", "dimension": "SEED dimension"}


def _iou(detail: Mapping[str, Any]) -> float:
    """A grounding answer's IoU, NaN (both boxes empty) read as 0."""
    value = detail.get("iou", 0.0)
    return 0.0 if value is None or math.isnan(value) else float(value)


def worst_first(details: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The answers by score from the lowest (ties: the lower IoU first for grounding, then file order)."""

    def key(item: tuple[int, Mapping[str, Any]]) -> tuple[float, float, int]:
        position, detail = item
        return float(detail.get("score", 0.0)), _iou(detail) if "iou" in detail else 0.0, position

    return [detail for _, detail in sorted(enumerate(details), key=key)]


def picture_ref(detail: Mapping[str, Any]) -> str:
    """The picture of an answer as the generation opens it: the data's ``image``; MME's under ``images/<task>/``
    (as the original ``mme/eval.py`` builds the path)."""
    image = str(detail.get("image") or "")
    if image and "task" in detail and not os.path.isabs(image):
        return os.path.join("images", str(detail["task"]), image)
    return image


def pixel_box_to_grid(box: Sequence[float], width: float, height: float) -> tuple[tuple[int, int], ...]:
    """A ``[x1, y1, x2, y2]`` box in pixels of a ``width`` x ``height`` picture as two corners on Qwen-VL's
    [0, 1000) grid (what :mod:`.pictures` draws), corners sorted so that a box written backwards still draws."""
    x1, y1, x2, y2 = (float(v) for v in box)
    xs = sorted((round(x1 / width * 1000), round(x2 / width * 1000)))
    ys = sorted((round(y1 / height * 1000), round(y2 / height * 1000)))
    return (xs[0], ys[0]), (xs[1], ys[1])


def grounding_boxes(detail: Mapping[str, Any]) -> list[Drawn]:
    """The reference box and, where the answer held one, the predicted box, in the report's two colours."""
    from .pictures import PREDICTED, REFERENCE, Drawn

    width, height = float(detail["width"]), float(detail["height"])
    boxes = [Drawn("box", pixel_box_to_grid(detail["reference_box"], width, height), REFERENCE, None)]
    if detail.get("parsed") and any(detail["box"]):
        grid = pixel_box_to_grid(detail["box"], width, height)
        boxes.append(Drawn("box", grid, PREDICTED, None, below=True))
    return boxes


def _number(value: float) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _box(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):.1f}" for v in box) + "] px"


def reference_text(detail: Mapping[str, Any]) -> str:
    """The reference as the card shows it: a box in pixels, one answer, or the answers with their counts when some
    repeat (the ten human answers of VQA)."""
    if "reference_box" in detail:
        return _box(detail["reference_box"])
    if "references" not in detail:
        return str(detail.get("reference", ""))
    references = [str(r) for r in detail["references"]]
    counts = Counter(references)
    if len(counts) < len(references):
        return " | ".join(f"{answer} (x{n})" for answer, n in counts.most_common())
    return " | ".join(references)


def score_notes(detail: Mapping[str, Any], family: str) -> list[str]:
    """The lines under a card's title: the score, how the answer was read, and a missing prediction."""
    notes = []
    if detail.get("missing"):
        notes.append("no prediction for this question: scored as an empty answer")
    score = float(detail.get("score", 0.0))
    if family == "grounding":
        hit = "hit" if score else "miss"
        notes.append(f"IoU {_iou(detail):.3f} ({hit}: IoU >= 0.5 is a hit)")
        if detail.get("parsed"):
            notes.append(f"predicted box {_box(detail['box'])}")
        elif not detail.get("missing"):
            notes.append("no box found in the answer: scored as a zero box")
    elif family == "caption":
        notes.append(f"CIDEr of this picture {score:.3f}")
    else:
        notes.append(f"score {_number(score)}")
    if "cleaned" in detail:
        notes.append(f"answer after GQA's clean-up: {detail['cleaned']!r}")
    if "read_as" in detail:
        notes.append(f"read as: {detail['read_as']}")
    return notes


def add_answer_card(
    page: Page, detail: Mapping[str, Any], family: str, number: int, image_root: Path | None
) -> str | None:
    """One answer's card; returns the line saying why its picture is not shown (None when it is, or when the
    question names none)."""
    from .pictures import save_picture

    ref = picture_ref(detail)
    pictures: list[tuple[Path | None, str]] = []
    why_not = None
    if ref:
        boxes = grounding_boxes(detail) if family == "grounding" else []
        out = page.images / f"answer-{number:04d}.png"
        why_not = save_picture(ref, image_root, boxes, out)
        pictures.append((None, why_not) if why_not else (out, ref))
    prediction = detail.get("prediction")
    turns = [
        ("question", str(detail.get("question", ""))),
        ("reference", reference_text(detail)),
        ("prediction", "(none)" if prediction is None else str(prediction)),
    ]
    tags = [family] + (["missing"] if detail.get("missing") else [])
    title = f"question {detail.get('id')}" + (f" ({detail['task']})" if "task" in detail else "")
    page.card(title, tags, pictures, turns, score_notes(detail, family), error=bool(detail.get("missing")))
    return why_not


def iou_histogram(details: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The number of grounding answers in each IoU tenth (``0.0-0.1`` ... ``0.9-1.0``, 1.0 in the last)."""
    counts = {f"{k / IOU_BINS:.1f}-{(k + 1) / IOU_BINS:.1f}": 0 for k in range(IOU_BINS)}
    labels = list(counts)
    for detail in details:
        counts[labels[min(IOU_BINS - 1, int(_iou(detail) * IOU_BINS))]] += 1
    return counts


def _chart(
    page: Page, name: str, series: str, groups: Mapping[str, float], title: str, overall: float | None = None
) -> None:
    """A bar chart of one breakdown (``label -> value``; the ``MAX_CHART_ROWS`` lowest values when there are more)
    saved as ``images/breakdown-<name>.png``, the overall figure as a tick over each bar."""
    from .plots import benchmark_bars

    labels = list(groups)
    if len(labels) > MAX_CHART_ROWS:
        labels = sorted(labels, key=lambda label: groups[label])[:MAX_CHART_ROWS]
        title += f" (the {MAX_CHART_ROWS} lowest)"
    values: list[float | None] = [float(groups[label]) for label in labels]
    references = None if overall is None else {"all questions": [overall] * len(labels)}
    out = page.images / f"breakdown-{name}.png"
    benchmark_bars(labels, {series: values}, out, title, references)
    page.figure(out, title)


def add_breakdowns(page: Page, result: Mapping[str, Any], family: str) -> None:
    """The breakdown sections the result has: grouped scores, MME's tasks, grounding's IoU histogram."""
    breakdown = result.get("breakdown") or {}
    metrics = result.get("metrics") or {}
    headline = next(iter(metrics), None)
    for key, name in GROUPED.items():
        groups = breakdown.get(key)
        if not groups or headline is None:
            continue
        page.heading(f"{headline} by {name}")
        page.table([name, headline], list(groups.items()))
        if len(groups) > 1:  # one group is the headline figure again: its table says it
            _chart(page, key, headline, groups, f"{headline} by {name}", metrics[headline])
    tasks = breakdown.get("tasks")
    if tasks:
        page.heading("MME tasks (acc + acc+ = score, out of 200)")
        rows = [(task, s["acc"], s["acc_plus"], s["score"]) for task, s in tasks.items()]
        page.table(["task", "acc", "acc+", "score"], rows)
        for total in ("perception", "cognition"):
            missing = breakdown.get(f"{total}_missing_tasks") or []
            if missing:
                page.paragraph(f"{total}: summed without {len(missing)} task(s) absent: {', '.join(missing)}")
        scores = {task: s["score"] for task, s in tasks.items()}
        _chart(page, "tasks", "score", scores, "score by MME task")
    if family == "grounding" and result.get("details"):
        counts = iou_histogram(result["details"])
        page.heading("IoU of the answers (one split per run: compare splits with eval --compare)")
        page.table(["IoU", "answers"], list(counts.items()))
        if "unparsed_boxes" in breakdown:
            page.paragraph(f"answers without a box (scored as a zero box): {breakdown['unparsed_boxes']}")
        _chart(page, "iou", "answers", counts, "answers by IoU")


def write_benchmark_report(
    result: Mapping[str, Any],
    folder: str | Path,
    *,
    image_root: str | Path | None = None,
    cards: int = DEFAULT_CARDS,
) -> Path:
    """Write the page of one benchmark result into ``folder``; returns ``index.html``.

    Args:
        result: what ``eval_mm.scoring.score_benchmark`` (or ``eval_mm.runner.run_benchmark``) returns.
        folder: the report folder (created; its old pictures are removed).
        image_root: the folder relative picture paths resolve against (None: the current directory).
        cards: the most answers shown, the worst first.

    Raises:
        ReportError: the folder cannot be written.
    """
    from ..eval_mm.catalog import get_benchmark
    from .page import Page
    from .pictures import PREDICTED, REFERENCE

    name = str(result.get("benchmark", "benchmark"))
    family = get_benchmark(name).family
    root = Path(image_root) if image_root is not None else None
    try:
        page = Page(folder, f"{name}: {result.get('scoring', 'original')} scoring")
        page.heading("Metrics")
        page.table(["", "count"], [(label, result[key]) for key, label in COUNTS.items() if key in result])
        metrics = result.get("metrics") or {}
        if metrics:
            page.table(["metric", "value"], list(metrics.items()))
        else:
            page.paragraph(str(result.get("note") or "no metric: nothing was scored locally"))
        for key, what in (("unknown_ids", "Predictions for no question of --data"), ("skipped", "Skipped")):
            lines = [str(line) for line in result.get(key) or []]
            if lines:
                page.heading(f"{what} ({len(lines)})")
                page.errors(lines, limit=MAX_LISTED)
        add_breakdowns(page, result, family)
        details = list(result.get("details") or [])
        shown = worst_first(details)[:cards]
        page.heading(f"Answers, lowest score first ({len(shown)} of {len(details)})")
        if family == "grounding":
            page.legend([("reference", REFERENCE), ("prediction", PREDICTED)])
        unreadable = []
        for number, detail in enumerate(shown, start=1):
            why_not = add_answer_card(page, detail, family, number, root)
            if why_not:
                unreadable.append(f"question {detail.get('id')}: {why_not}")
        if unreadable:
            page.heading(f"Pictures that could not be read ({len(unreadable)})")
            page.errors(unreadable)
        return page.write()
    except OSError as exc:
        raise ReportError(f"eval --benchmark --report {folder}: cannot write the report: {exc}") from None
