"""Reading a predictions file: the answers a model gave, as the original scripts (or our generation) save them.

A file is a JSON list of objects or JSON Lines (one object per line); a folder is the MME results folder the
original's ``mme/eval.py`` writes (``<task>.txt`` lines ``image<TAB>question<TAB>gt<TAB>answer``). An object's
text is under ``answer`` or ``prediction`` (captions: ``caption``); its question is named by the catalog's
``id_key`` of the benchmark (``question_id``, ``questionId``, ``image`` or ``image_id``; ``question_id`` also for
the benchmarks the original names by position, when our generation writes the line number there; MME:
``task`` + ``image`` + ``question`` when present, else ``question_id``: :func:`~.gold.mme_question_id` or
``task/N``). An object without an id is matched by its position in the file (as the
original writes ChartQA and RefCOCO results). Ids compare as strings.

A malformed line or an object without text is one :class:`PredictionsError` naming ``file:line``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .catalog import Benchmark
from .gold import mme_question_id, mme_task_files, read_mme_lines

TEXT_KEYS = ("answer", "prediction")
CAPTION_TEXT_KEYS = ("caption", "answer", "prediction")


class PredictionsError(UserError, ValueError):
    """A predictions file that cannot be read (names the file and line)."""


@dataclass(frozen=True)
class Prediction:
    """One saved answer.

    Attributes:
        id: the question id as a string, or None when the object names none (matched by position).
        text: the answer: a string, or an int (a choice index).
        where: ``file:line`` (or ``predictions[i]`` for a list given in memory).
    """

    id: str | None
    text: str | int
    where: str


def id_keys(benchmark: Benchmark) -> tuple[str, ...]:
    """The keys that name a question in ``benchmark``'s predictions, first found wins."""
    if benchmark.id_key:
        return (benchmark.id_key,)
    return ("question_id",)


def text_keys(benchmark: Benchmark) -> tuple[str, ...]:
    """The keys that hold the answer text in ``benchmark``'s predictions, first found wins."""
    return CAPTION_TEXT_KEYS if benchmark.family == "caption" else TEXT_KEYS


def _records(path: Path) -> list[tuple[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PredictionsError(
            f"{path}: cannot read the predictions: {getattr(exc, 'strerror', None) or exc}"
        ) from exc
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PredictionsError(f"{path}:{exc.lineno}: not a JSON list ({exc.msg})") from exc
        return [(f"{path}: item {i}", item) for i, item in enumerate(items)]
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise PredictionsError(f"{path}:{number}: not a JSON object ({exc.msg})") from exc
    return records


def _mme_folder(folder: Path) -> list[Prediction]:
    found = []
    for task, path in mme_task_files(folder):
        for number, fields in read_mme_lines(path, 4):
            found.append(
                Prediction(mme_question_id(task, fields[0], fields[1]), fields[3], f"{path}:{number}")
            )
    return found


def _one(benchmark: Benchmark, where: str, obj: Any) -> Prediction:
    if not isinstance(obj, Mapping):
        raise PredictionsError(f"{where}: not a JSON object")
    keys = text_keys(benchmark)
    key = next((k for k in keys if k in obj), None)
    if key is None:
        raise PredictionsError(f"{where}: no {' or '.join(repr(k) for k in keys)}")
    text = obj[key]
    if text is None:
        text = ""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise PredictionsError(f"{where}: {key!r} must be a string (or an option index)")
    if benchmark.family == "mme" and all(k in obj for k in ("task", "image", "question")):
        return Prediction(
            mme_question_id(str(obj["task"]), str(obj["image"]), str(obj["question"])), text, where
        )
    id_key = next((k for k in (*id_keys(benchmark), "question_id") if k in obj), None)
    return Prediction(None if id_key is None else str(obj[id_key]), text, where)


def read_predictions(benchmark: Benchmark, source: Path | Sequence[Mapping[str, Any]]) -> list[Prediction]:
    """Every prediction in ``source`` (a file, an MME results folder, or objects already in memory), in order.

    Raises:
        PredictionsError: a malformed line, or an object without an answer (one line naming ``file:line``).
    """
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            return _mme_folder(path)
        records = _records(path)
    else:
        records = [(f"predictions[{i}]", obj) for i, obj in enumerate(source)]
    return [_one(benchmark, where, obj) for where, obj in records]
