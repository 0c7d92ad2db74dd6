"""The gold side of a benchmark: its questions and reference answers, read from the files the original reads.

- ``--data``: the eval_mm JSON Lines file of the benchmark, unchanged. A question's id is its ``question_id``;
  where the lines carry none (ChartQA, ScienceQA, RefCOCO: the catalog's ``id_key`` is ``""``) it is the 0-based
  line number. Ids are compared as strings. An empty line before the end of the file is an error (the original
  would stop on it), so a line number always names the same question.
- VQA family (VQAv2, OK-VQA, TextVQA, VizWiz): the human answers come from ``--annotations`` (the official
  annotations JSON, ``{"annotations": [{"question_id", "answers": [{"answer", ...}], "answer_type",
  "question_type"}]}``); ``--questions`` (the official questions JSON), when given, must hold every question too.
- DocVQA val: the answers of ``--annotations`` (``val_v1.0.json``: ``{"data": [{"questionId", "answers"}]}``), or
  the ``answer`` of the data line when no annotations are given.
- ChartQA, GQA, OCR-VQA, AI2D, ScienceQA, SEED: the data line's ``answer`` (a string or a list). SEED's
  dimension is the line's ``question_type_id``, or the question's in ``--annotations`` (``SEED-Bench.json``).
- RefCOCO family: the line's ``bbox`` ``[x1, y1, x2, y2]`` in pixels, ``width`` and ``height``.
- Captioning: ``--data`` is the COCO-style JSON the original reads (``images`` with ``id`` and ``image``,
  ``annotations`` with ``image_id`` and ``caption``); the id is the image id.
- MME: ``--data`` is a folder of the eval_tool's task files, ``<task>.txt`` with lines ``image<TAB>question<TAB>
  yes|no`` (the eval_tool's ``Your_Results`` templates; a fourth column, as in the folder the original's
  ``eval.py`` writes, is ignored here), or one such file. The id is :func:`mme_question_id`; ``task/N`` (N the
  0-based line of the task file) names the same question (``extra["aliases"]``).

Every problem is one :class:`GoldError` line naming the file and line, or the question id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..format.markup import latest_image
from .catalog import Benchmark
from .metrics.mme import MME_TASKS

#: SEED-Bench's image dimensions by ``question_type_id``, as its leaderboard names them (the Qwen-VL repository's
#: ``eval_mm/seed_bench/leaderboard.jpg``); ``SEED-Bench.json``'s own names win when it is given.
SEED_DIMENSIONS = {
    1: "Scene Understanding",
    2: "Instance Identity",
    3: "Instance Attributes",
    4: "Instance Localization",
    5: "Instance Counting",
    6: "Spatial Relation",
    7: "Instance Interaction",
    8: "Visual Reasoning",
    9: "Text Recognition",
}


class GoldError(UserError, ValueError):
    """A gold file that cannot be read as the benchmark needs (names the file and line, or the question id)."""


@dataclass
class GoldQuestion:
    """One question of a benchmark and what a prediction is scored against.

    Attributes:
        id: the question's id as a string (how predictions are matched).
        raw_id: the id as the data has it (an int for VQAv2's ``question_id``), for the server files.
        question: the question (the referring expression for grounding, ``""`` for captioning).
        image: the picture's path as the data names it.
        reference: what the family's metric takes: the annotation's answer dicts (VQA), a list of strings
            (ANLS, relaxed, exact, captions), the gold option (choice), the ``[x1, y1, x2, y2]`` box in pixels
            (grounding), ``"yes"``/``"no"`` (MME); None for server splits.
        groups: breakdown labels (``answer_type``, ``question_type``, ``dimension``, ``task``).
        extra: family details (``width``/``height`` for grounding; ``task`` and ``aliases``, other ids of the same
            question, for MME).
        where: ``file:line`` it was read from.
    """

    id: str
    raw_id: Any
    question: str
    image: str
    reference: Any
    groups: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    where: str = ""


def mme_question_id(task: str, image: str, question: str) -> str:
    """The id of an MME question: ``task/image/question`` (MME asks two questions per picture)."""
    return f"{task}/{image}/{question}"


def read_json(path: Path, what: str) -> Any:
    """``path`` parsed as JSON, or a :class:`GoldError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldError(f"{path}: cannot read the {what}: {getattr(exc, 'strerror', None) or exc}") from exc
    except json.JSONDecodeError as exc:
        raise GoldError(f"{path}:{exc.lineno}: the {what} is not valid JSON ({exc.msg})") from exc


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each line of ``path``; blank lines are allowed only at the end."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldError(f"{path}: cannot read --data: {getattr(exc, 'strerror', None) or exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise GoldError(f"{path}:{number}: empty line inside --data (line numbers name questions)")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GoldError(f"{path}:{number}: not a JSON object ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise GoldError(f"{path}:{number}: not a JSON object")
        yield number, obj


def _need(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj or obj[key] is None:
        raise GoldError(f"{where}: no {key!r}")
    return obj[key]


def _answers(value: Any, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise GoldError(f"{where}: 'answer' must be a string or a non-empty list of strings")
    return values


def _index(items: Any, key: str, path: Path, what: str) -> dict[str, dict[str, Any]]:
    if not isinstance(items, list):
        raise GoldError(f"{path}: not {what} (no list of entries)")
    found: dict[str, dict[str, Any]] = {}
    for entry in items:
        if isinstance(entry, dict) and key in entry:
            found[str(entry[key])] = entry
    return found


def _vqa_references(
    questions: list[GoldQuestion], annotations: Path | None, question_file: Path | None
) -> None:
    if annotations is None:
        raise GoldError("the VQA score needs the official annotations JSON: pass --annotations")
    loaded = read_json(annotations, "annotations")
    index = _index(
        loaded.get("annotations") if isinstance(loaded, dict) else None,
        "question_id",
        annotations,
        "a VQA annotations file",
    )
    asked = None
    if question_file is not None:
        q = read_json(question_file, "questions")
        asked = _index(
            q.get("questions") if isinstance(q, dict) else None,
            "question_id",
            question_file,
            "a VQA questions file",
        )
    for item in questions:
        ann = index.get(item.id)
        if ann is None:
            raise GoldError(
                f"{annotations}: no annotation for question_id {item.id} ({item.where}): it does not match --data"
            )
        if asked is not None:
            if item.id not in asked:
                raise GoldError(
                    f"{question_file}: no question_id {item.id} ({item.where}): it does not match --data"
                )
            item.question = item.question or str(asked[item.id].get("question", ""))
        answers = ann.get("answers")
        if (
            not isinstance(answers, list)
            or not answers
            or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers)
        ):
            raise GoldError(f"{annotations}: question_id {item.id} has no list of answers with an 'answer'")
        item.reference = answers
        for key in ("answer_type", "question_type"):
            if key in ann:
                item.groups[key] = str(ann[key])


def _docvqa_references(questions: list[GoldQuestion], annotations: Path) -> None:
    loaded = read_json(annotations, "annotations")
    index = _index(
        loaded.get("data") if isinstance(loaded, dict) else None,
        "questionId",
        annotations,
        "a DocVQA annotations file",
    )
    for item in questions:
        entry = index.get(item.id)
        if entry is None:
            raise GoldError(
                f"{annotations}: no questionId {item.id} ({item.where}): it does not match --data"
            )
        item.reference = _answers(entry.get("answers"), f"{annotations}: questionId {item.id}")


def _seed_dimensions(questions: list[GoldQuestion], annotations: Path | None, lines: dict[str, dict]) -> None:
    names = dict(SEED_DIMENSIONS)
    by_id: dict[str, Any] = {}
    if annotations is not None:
        loaded = read_json(annotations, "SEED-Bench annotations")
        if isinstance(loaded, dict) and isinstance(loaded.get("question_type"), dict):
            names.update({int(v): str(k) for k, v in loaded["question_type"].items()})
        qs = loaded.get("questions") if isinstance(loaded, dict) else None
        by_id = {
            k: v.get("question_type_id")
            for k, v in _index(qs, "question_id", annotations, "SEED-Bench.json").items()
        }
    for item in questions:
        dim = lines[item.id].get("question_type_id", by_id.get(item.id))
        if dim is not None:
            item.groups["dimension"] = names.get(int(dim), str(dim))


def _from_lines(benchmark: Benchmark, data: Path) -> tuple[list[GoldQuestion], dict[str, dict]]:
    questions: list[GoldQuestion] = []
    lines: dict[str, dict] = {}
    seen: dict[str, str] = {}
    for number, obj in read_jsonl(data):
        where = f"{data}:{number}"
        raw_id = number - 1 if benchmark.id_key == "" else _need(obj, "question_id", where)
        qid = str(raw_id)
        if qid in seen:
            raise GoldError(f"{where}: question_id {qid} repeats {seen[qid]}")
        seen[qid] = where
        question = obj.get("question", obj.get("sent", obj.get("prompt", "")))
        image = obj.get("image") or latest_image(str(obj.get("prompt", ""))) or ""  # SEED: inside its prompt
        questions.append(GoldQuestion(qid, raw_id, str(question), str(image), None, where=where))
        lines[qid] = obj
    if not questions:
        raise GoldError(f"{data}: no question")
    return questions, lines


def _grounding(item: GoldQuestion, obj: dict[str, Any]) -> None:
    box = _need(obj, "bbox", item.where)
    if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, int | float) for v in box):
        raise GoldError(f"{item.where}: 'bbox' must be [x1, y1, x2, y2]")
    for key in ("width", "height"):
        value = _need(obj, key, item.where)
        if not isinstance(value, int | float) or value <= 0:
            raise GoldError(f"{item.where}: {key!r} must be a positive number")
        item.extra[key] = value
    item.reference = [float(v) for v in box]


def _captions(data: Path) -> list[GoldQuestion]:
    loaded = read_json(data, "caption annotations (COCO-style JSON)")
    if not isinstance(loaded, dict) or not isinstance(loaded.get("images"), list):
        raise GoldError(f"{data}: not a COCO-style caption file (no 'images' list)")
    captions: dict[str, list[str]] = {}
    for ann in loaded.get("annotations") or []:
        if isinstance(ann, dict) and "image_id" in ann and isinstance(ann.get("caption"), str):
            captions.setdefault(str(ann["image_id"]), []).append(ann["caption"])
    questions = []
    for position, image in enumerate(loaded["images"]):
        where = f"{data}: images[{position}]"
        raw_id = _need(image, "id", where) if isinstance(image, dict) else None
        if raw_id is None:
            raise GoldError(f"{where}: not an object with an 'id'")
        refs = captions.get(str(raw_id))
        if not refs:
            raise GoldError(f"{data}: image id {raw_id} has no reference caption")
        questions.append(
            GoldQuestion(str(raw_id), raw_id, "", str(image.get("image", "")), refs, where=where)
        )
    if not questions:
        raise GoldError(f"{data}: no image")
    return questions


def mme_task_files(folder: Path) -> list[tuple[str, Path]]:
    """``(task, file)`` of each MME task file in ``folder`` (or ``folder`` itself when it is one file), in the
    order of ``calculation.py``'s tasks."""
    if folder.is_file():
        return [(folder.stem, folder)]
    if not folder.is_dir():
        raise GoldError(f"{folder}: no such MME task folder")
    found = [(task, folder / f"{task}.txt") for task in MME_TASKS if (folder / f"{task}.txt").is_file()]
    if not found:
        raise GoldError(f"{folder}: no MME task file (<task>.txt for {', '.join(MME_TASKS)})")
    return found


def read_mme_lines(path: Path, columns: int) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of an MME task file, each line split on tabs into at least ``columns`` fields
    (the fourth field, an answer, keeps any further tabs)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, 1):
        fields = line.split("\t", 3)
        if len(fields) < columns:
            raise GoldError(f"{path}:{number}: expected {columns} tab-separated fields, found {len(fields)}")
        yield number, fields


def _mme(data: Path) -> list[GoldQuestion]:
    questions: list[GoldQuestion] = []
    seen: dict[str, str] = {}
    for task, path in mme_task_files(Path(data)):
        count = 0
        for number, fields in read_mme_lines(path, 3):
            where = f"{path}:{number}"
            image, question, gt = fields[0], fields[1], fields[2].strip().lower()
            if gt not in ("yes", "no"):
                raise GoldError(f"{where}: the answer must be yes or no, not {fields[2]!r}")
            qid = mme_question_id(task, image, question)
            if qid in seen:
                raise GoldError(f"{where}: the same picture and question as {seen[qid]}")
            seen[qid] = where
            # The alias is how our generation names an MME question: the task and the 0-based line of its file.
            extra = {"task": task, "aliases": [f"{task}/{number - 1}"]}
            questions.append(
                GoldQuestion(qid, qid, question, image, gt, groups={"task": task}, extra=extra, where=where)
            )
            count += 1
        if count % 2:
            raise GoldError(
                f"{path}: {count} lines; MME asks two questions per picture, so the count must be even"
            )
    return questions


def read_gold(
    benchmark: Benchmark, data: Path, *, questions: Path | None = None, annotations: Path | None = None
) -> list[GoldQuestion]:
    """The questions of ``benchmark`` with their references, in the order of ``data``.

    Raises:
        GoldError: a file that is missing, malformed, or does not match ``data`` (one line naming where).
    """
    data = Path(data)
    family = benchmark.family
    if family == "caption":
        return _captions(data)
    if family == "mme":
        return _mme(data)
    items, lines = _from_lines(benchmark, data)
    if family == "vqa":
        _vqa_references(items, annotations, questions)
    elif family == "anls" and annotations is not None:
        _docvqa_references(items, annotations)
    elif family == "grounding":
        for item in items:
            _grounding(item, lines[item.id])
    elif family == "choice":
        for item in items:
            item.reference = _need(lines[item.id], "answer", item.where)
        if benchmark.name.startswith("seed"):
            _seed_dimensions(items, annotations, lines)
    elif family != "server":
        for item in items:
            item.reference = _answers(_need(lines[item.id], "answer", item.where), item.where)
    return items
