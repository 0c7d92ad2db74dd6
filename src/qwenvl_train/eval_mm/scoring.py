"""Scoring saved predictions of one benchmark as the original ``eval_mm/`` scripts do (``scoring="original"``) or
by the benchmarks' own definitions (``"official"``).

:func:`score_benchmark` is the one entry point (``eval --benchmark NAME --predictions FILE`` and the generation
both end here): it reads the gold (:mod:`.gold`) and the predictions (:mod:`.predictions`), matches them by id,
scores each question with the family's metric (:mod:`.metrics`) and returns the ``--out`` dictionary. A question
without a prediction is scored as the empty answer and counted in ``num_missing``; a prediction whose id is not
a question of ``--data`` is counted and listed in ``unknown_ids`` and never used. :func:`predictions_for_server`
writes the shape an official evaluation server takes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from .catalog import Benchmark, get_benchmark
from .gold import GoldQuestion, read_gold
from .metrics import (
    COGNITION_TASKS,
    PERCEPTION_TASKS,
    SCORINGS,
    anls_score,
    choice_score,
    cider_scores,
    exact_match_score,
    gqa_clean_answer,
    grounding_iou,
    grouped_percent,
    is_hit,
    mme_task_scores,
    parse_yes_no,
    percent,
    relaxed_score,
    vqa_score,
)
from .predictions import Prediction, PredictionsError, read_predictions

#: What a family's scorer returns: metrics, breakdown, per-question details.
Scored = tuple[dict[str, float], dict[str, Any], list[dict[str, Any]]]


class ScoringError(UserError, ValueError):
    """A scoring request that cannot be served (unknown scoring, a server split asked for a local score...)."""


def match_predictions(
    gold: Sequence[GoldQuestion], predictions: Sequence[Prediction]
) -> tuple[dict[str, Prediction], list[str]]:
    """Predictions by gold id, and the ids of predictions that name no gold question (in file order).

    A prediction without an id takes the id of the gold question at its position; an alias of a question (MME's
    ``task/N``) stands for its id. The same question answered twice is an error.
    """
    known = {q.id: q.id for q in gold}
    for q in gold:
        known.update({alias: q.id for alias in q.extra.get("aliases", ())})
    matched: dict[str, Prediction] = {}
    seen: dict[str, str] = {}
    unknown: list[str] = []
    for position, prediction in enumerate(predictions):
        pid = prediction.id
        if pid is None:
            pid = gold[position].id if position < len(gold) else f"#{position}"
        pid = known.get(pid, pid)
        if pid in seen:
            raise PredictionsError(f"{prediction.where}: question {pid} already answered at {seen[pid]}")
        seen[pid] = prediction.where
        if pid in known:
            matched[pid] = prediction
        else:
            unknown.append(pid)
    return matched, unknown


def _text(prediction: Prediction | None) -> str:
    return "" if prediction is None else str(prediction.text)


def _base_detail(q: GoldQuestion, prediction: Prediction | None) -> dict[str, Any]:
    return {
        "id": q.id,
        "question": q.question,
        "image": q.image,
        "prediction": None if prediction is None else prediction.text,
        "missing": prediction is None,
    }


def _per_question(
    benchmark: Benchmark, gold: Sequence[GoldQuestion], matched: Mapping[str, Prediction], scoring: str
) -> Scored:
    family = benchmark.family
    scores: list[float] = []
    details: list[dict[str, Any]] = []
    for q in gold:
        prediction = matched.get(q.id)
        answer = _text(prediction)
        detail = _base_detail(q, prediction)
        if family == "vqa":
            score = vqa_score(answer, q.reference, scoring)
            detail["references"] = [a["answer"] for a in q.reference]
        elif family == "anls":
            score = anls_score(answer, q.reference)
            detail["references"] = q.reference
        elif family == "relaxed":
            score = relaxed_score(answer, q.reference, scoring)
            detail["references"] = q.reference
        elif family == "gqa":
            cleaned = gqa_clean_answer(answer)
            score = exact_match_score(cleaned, q.reference)
            detail.update(references=q.reference, cleaned=cleaned)
        elif family == "exact":
            score = exact_match_score(answer, q.reference)
            detail["references"] = q.reference
        elif family == "choice":
            score = choice_score(None if prediction is None else prediction.text, q.reference)
            detail["reference"] = q.reference
        elif family == "grounding":
            iou, box, parsed = grounding_iou(
                answer, q.reference, q.extra["width"], q.extra["height"], scoring
            )
            score = float(is_hit(iou))
            detail.update(
                reference_box=q.reference,
                box=list(box),
                parsed=parsed,
                iou=iou,
                width=q.extra["width"],
                height=q.extra["height"],
            )
        else:
            raise ScoringError(f"benchmark {benchmark.name!r}: family {family!r} is not scored per question")
        detail["score"] = score
        scores.append(score)
        details.append(detail)
    metrics = {benchmark.metric: percent(scores)}
    breakdown: dict[str, Any] = {}
    for key in ("answer_type", "question_type", "dimension"):
        labels = [q.groups.get(key) for q in gold]
        if any(label is not None for label in labels):
            breakdown[key] = grouped_percent(scores, labels)
    if family == "grounding":
        ious = [0.0 if math.isnan(d["iou"]) else d["iou"] for d in details]
        metrics["mean_iou"] = percent(ious)
        breakdown["unparsed_boxes"] = sum(1 for d in details if not d["parsed"])
    return metrics, breakdown, details


def _captions(gold: Sequence[GoldQuestion], matched: Mapping[str, Prediction]) -> Scored:
    references = {q.id: q.reference for q in gold}
    candidates = {q.id: _text(matched.get(q.id)) for q in gold}
    corpus, per_image = cider_scores(references, candidates)
    details = []
    for q in gold:
        detail = _base_detail(q, matched.get(q.id))
        detail.update(references=q.reference, score=per_image[q.id])
        details.append(detail)
    return {"CIDEr": 100.0 * corpus}, {}, details


def _mme(gold: Sequence[GoldQuestion], matched: Mapping[str, Prediction]) -> Scored:
    """Each task's acc / acc+ / score in the order of the task files; perception and cognition summed over the
    tasks present (``calculation.py`` needs all 14; the tasks missing are listed in the breakdown)."""
    by_task: dict[str, list[GoldQuestion]] = {}
    for q in gold:
        by_task.setdefault(q.extra["task"], []).append(q)
    metrics: dict[str, float] = {}
    breakdown: dict[str, Any] = {"tasks": {}}
    details = []
    for task, questions in by_task.items():
        answers = [_text(matched.get(q.id)) for q in questions]
        task_scores = mme_task_scores([q.reference for q in questions], answers)
        breakdown["tasks"][task] = task_scores
        metrics[task] = task_scores["score"]
        for q, answer in zip(questions, answers, strict=True):
            detail = _base_detail(q, matched.get(q.id))
            read = parse_yes_no(answer)
            detail.update(task=task, reference=q.reference, read_as=read, score=float(read == q.reference))
            details.append(detail)
    totals: dict[str, float] = {}
    for total, tasks in (("perception", PERCEPTION_TASKS), ("cognition", COGNITION_TASKS)):
        present = [t for t in tasks if t in metrics]
        if present:
            value = 0.0
            for t in present:
                value += metrics[t]
            totals[total] = value
        breakdown[f"{total}_missing_tasks"] = [t for t in tasks if t not in metrics]
    return {**totals, **metrics}, breakdown, details


def score_benchmark(
    name: str,
    data: Path,
    predictions: Path | list[dict],
    *,
    questions: Path | None = None,
    annotations: Path | None = None,
    scoring: str = "original",
) -> dict[str, Any]:
    """Score saved predictions of benchmark ``name``.

    Args:
        name: a catalog name (``textvqa_val``, ``refcoco_val``, ``mme``...).
        data: the benchmark's ``--data`` (see :mod:`.gold` for each family's file).
        predictions: a predictions file / MME results folder, or the prediction objects themselves.
        questions: the official VQA questions JSON (VQA family, optional).
        annotations: the official VQA annotations JSON (VQA family), DocVQA's ``val_v1.0.json``, or
            ``SEED-Bench.json`` (SEED dimensions).
        scoring: ``original`` (the scripts' numbers, quirks included) or ``official``.

    Returns:
        ``{"benchmark", "scoring", "num_questions", "num_missing", "num_unknown", "unknown_ids", "metrics":
        {KEY: float on 0-100 (MME on its own 0-200 per task scale)}, "breakdown": {...}, "details": [one dict
        per question: id, question, image, prediction, missing, reference(s), score in [0, 1] (per-image CIDEr
        on pycocoevalcap's scale for captions), and for grounding the boxes in pixels and the IoU]}``. Server
        splits have ``metrics: {}``.

    Raises:
        UserError: an unknown benchmark or scoring, or unreadable / mismatched files (one line naming where).
    """
    if scoring not in SCORINGS:
        raise ScoringError(f"unknown scoring {scoring!r}; choose one of {', '.join(SCORINGS)}")
    benchmark = get_benchmark(name)
    gold = read_gold(benchmark, Path(data), questions=questions, annotations=annotations)
    matched, unknown = match_predictions(gold, read_predictions(benchmark, predictions))
    if benchmark.family == "server":
        metrics: dict[str, float] = {}
        breakdown: dict[str, Any] = {}
        details = [_base_detail(q, matched.get(q.id)) for q in gold]
    elif benchmark.family == "caption":
        metrics, breakdown, details = _captions(gold, matched)
    elif benchmark.family == "mme":
        metrics, breakdown, details = _mme(gold, matched)
    else:
        metrics, breakdown, details = _per_question(benchmark, gold, matched, scoring)
    return {
        "benchmark": benchmark.name,
        "scoring": scoring,
        "num_questions": len(gold),
        "num_missing": sum(1 for q in gold if q.id not in matched),
        "num_unknown": len(unknown),
        "unknown_ids": unknown,
        "metrics": metrics,
        "breakdown": breakdown,
        "details": details,
    }


#: The id key each official server takes, and whether its ids are integers.
SERVER_ID_KEYS = {
    "vqav2_testdev": ("question_id", True),
    "vizwiz_test": ("image", False),
    "docvqa_test": ("questionId", True),
}


def predictions_for_server(name: str, predictions: Path | list[dict]) -> list[dict]:
    """The predictions of a server split in the shape its evaluation server takes (the original's output).

    VQAv2 test-dev: ``[{"question_id": int, "answer"}]``; VizWiz test: ``[{"image", "answer"}]``; DocVQA test:
    ``[{"questionId": int, "answer"}]``. Every prediction must name its question.

    Raises:
        ScoringError: ``name`` is not a server split, or a prediction has no id / a non-integer one.
    """
    benchmark = get_benchmark(name)
    if name not in SERVER_ID_KEYS:
        raise ScoringError(
            f"benchmark {name!r} is scored locally; server splits: {', '.join(SERVER_ID_KEYS)}"
        )
    key, integer = SERVER_ID_KEYS[name]
    out = []
    for prediction in read_predictions(benchmark, predictions):
        if prediction.id is None:
            raise ScoringError(f"{prediction.where}: no {key!r}: the server needs every answer's question id")
        qid: Any = prediction.id
        if integer:
            try:
                qid = int(prediction.id)
            except ValueError as exc:
                raise ScoringError(f"{prediction.where}: {key} {prediction.id!r} is not an integer") from exc
        out.append({key: qid, "answer": str(prediction.text)})
    return out
