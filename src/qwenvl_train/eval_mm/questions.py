"""The questions of a benchmark, read from its ``--data`` file exactly as the original ``eval_mm/`` scripts read it.

    questions, skipped = read_questions(get_benchmark("textvqa_val"), Path("textvqa_val.jsonl"))

Each family reads its own layout (the file is the one the original reads, unchanged):

- VQA-style (``vqa``, ``anls``, ``relaxed``, ``gqa``, ``exact``, ``server``): JSON Lines with ``image``,
  ``question`` and ``question_id``; the prompt is ``<img>{image}</img>{question} Answer:``. ChartQA, whose
  original results name no question, is named by its line number, as the scorer matches it.
- ``grounding``: JSON Lines with ``image`` and ``sent``; ``<img>{image}</img><ref>{sent}</ref><box>``. The lines
  carry no id: a question is its 0-based line number.
- ``choice``: ScienceQA (``image``, ``hint`` (empty: ``N/A``), ``question``, ``choices``, ``answer``; the options
  lettered ``A. x`` and joined by newlines; id: the line number) or SEED (the ready-made ``prompt`` with its
  picture inside, and ``question_id``).
- ``caption``: the COCO-style JSON whose ``images`` list holds ``id`` and ``image``.
- ``mme``: MME's eval_tool task files (a folder of ``<task>.txt`` for the 14 tasks of ``calculation.py``, in its
  order, or one such file): ``image<TAB>question<TAB>
  answer`` lines, the picture at ``images/<task>/<image>`` as the original's ``get_images.py`` lays them out; the
  query is ``<img>images/<task>/<image></img>\\n{question}``; id ``<task>/<line>``.

A relative image path resolves against ``image_root`` (default: the current directory, as the original opened
it). A line that cannot be used (not JSON, a field missing, a picture that does not exist) is a
:class:`QuestionError` naming ``file:line``; with ``on_error="skip"`` it is left out and its line returned.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..data.images import is_url, resolve_image
from ..errors import UserError
from ..format.markup import Image, PromptError, read_prompt
from .catalog import Benchmark
from .gold import mme_task_files

OnError = Literal["stop", "skip"]
#: ``evaluate_multiple_choice.py``'s letters: ScienceQA has at most five options.
SCIENCEQA_LETTERS = ("A", "B", "C", "D", "E")
#: ``seed_bench/eval.py`` always scores four options.
SEED_LETTERS = ("A", "B", "C", "D")
#: Families asked with the VQA prompt from ``image``/``question``/``question_id`` lines.
#: The ``choice`` benchmark whose lines carry their prompt ready-made (the other is ScienceQA).
SEED_NAME = "seed_bench_image"
VQA_FAMILIES = frozenset({"vqa", "anls", "relaxed", "gqa", "exact", "server"})


class QuestionError(UserError, ValueError):
    """A question of ``--data`` cannot be asked; one line naming ``file:line`` (or the question id)."""


@dataclass
class Question:
    """One question, ready to be asked.

    Attributes:
        id: what the prediction names it by (the data's ``question_id``, the caption's image ``id``, or the
            0-based line number where the data has no id).
        index: its place among the benchmark's questions (the order of ``--data``).
        source: ``file:line`` (1-based) for messages.
        prompt: the original prompt text, ``<img>path</img>`` as the original wrote it (the MME query for MME).
        images: the pictures to load, resolved, one per ``<img>`` of ``prompt`` in order.
        options: the option letters to score (``choice`` only).
        fields: extra keys copied into the prediction (MME's task, image and question).
    """

    id: Any
    index: int
    source: str
    prompt: str
    images: list[str]
    options: tuple[str, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict)

    def error(self, reason: str) -> QuestionError:
        """A :class:`QuestionError` about this question."""
        return QuestionError(f"{self.source}: question {self.id!r}: {reason}")


@dataclass
class _Line:
    path: Path
    number: int  # 0-based
    text: str

    @property
    def source(self) -> str:
        return f"{self.path}:{self.number + 1}"

    def error(self, reason: str) -> QuestionError:
        return QuestionError(f"{self.source}: {reason}")

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.text)
        except ValueError as exc:
            raise self.error(f"not a JSON object ({exc})") from None
        if not isinstance(value, dict):
            raise self.error(f"not a JSON object but {type(value).__name__}")
        return value


def _require(line: _Line, data: dict[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in data:
        raise line.error(f"no {key!r} (keys: {', '.join(sorted(data)) or 'none'})")
    value = data[key]
    if not isinstance(value, kind):
        raise line.error(f"{key!r} must be {getattr(kind, '__name__', 'a valid value')}, got {value!r}")
    return value


def _image(line: _Line, ref: str, image_root: Path | None) -> str:
    """The picture to open: a relative path against ``image_root`` (None: the current directory)."""
    path = resolve_image(ref, image_root)
    if not is_url(path) and not os.path.isfile(path):
        raise line.error(f"picture {ref!r} not found ({path})")
    return path


def _lines(path: Path) -> Iterator[_Line]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise QuestionError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise QuestionError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows = text.splitlines()
    while rows and not rows[-1].strip():
        rows.pop()
    for number, row in enumerate(rows):
        line = _Line(path, number, row)
        if not row.strip():
            raise line.error("empty line inside the file (line numbers name questions)")
        yield line


def _vqa(bench: Benchmark, line: _Line, image_root: Path | None) -> Question:
    data = line.json()
    image = _require(line, data, "image")
    question = _require(line, data, "question")
    # Where the original's results name no question (ChartQA), the scorer matches by line: the id is the line.
    qid = line.number if not bench.id_key else _require(line, data, "question_id", (str, int))
    prompt = bench.prompt.format(image, question)
    return Question(qid, line.number, line.source, prompt, [_image(line, image, image_root)])


def _grounding(bench: Benchmark, line: _Line, image_root: Path | None) -> Question:
    data = line.json()
    image = _require(line, data, "image")
    sent = _require(line, data, "sent")
    prompt = bench.prompt.format(image, sent)
    return Question(line.number, line.number, line.source, prompt, [_image(line, image, image_root)])


def _scienceqa(bench: Benchmark, line: _Line, image_root: Path | None) -> Question:
    data = line.json()
    image = _require(line, data, "image")
    question = _require(line, data, "question")
    choices = _require(line, data, "choices", list)
    if not 1 <= len(choices) <= len(SCIENCEQA_LETTERS) or not all(isinstance(c, str) for c in choices):
        raise line.error(f"'choices' must be 1 to {len(SCIENCEQA_LETTERS)} strings, got {choices!r}")
    hint = data.get("hint") or "N/A"  # the original: `data['hint'] if data['hint'] else 'N/A'`
    letters = SCIENCEQA_LETTERS[: len(choices)]
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(letters, choices, strict=True))
    prompt = bench.prompt.format(image, hint, question, options)
    return Question(line.number, line.number, line.source, prompt, [_image(line, image, image_root)], letters)


def _seed(bench: Benchmark, line: _Line, image_root: Path | None) -> Question:
    data = line.json()
    prompt = bench.prompt.format(_require(line, data, "prompt"))
    qid = _require(line, data, "question_id", (str, int))
    try:
        refs = [seg.path for seg in read_prompt(prompt) if isinstance(seg, Image)]
    except PromptError as exc:
        raise line.error(f"'prompt': {exc}") from None
    if not refs:
        raise line.error("'prompt' names no picture (<img>path</img>)")
    images = [_image(line, ref, image_root) for ref in refs]
    return Question(qid, line.number, line.source, prompt, images, SEED_LETTERS)


def _gather(
    builders: Iterable[Callable[[int], Question]], on_error: OnError
) -> tuple[list[Question], list[str]]:
    """Call each builder with the number of questions kept so far; keep what it returns. A ``QuestionError``
    stops everything, or with ``on_error="skip"`` becomes one line of the skipped list."""
    questions: list[Question] = []
    skipped: list[str] = []
    for build in builders:
        try:
            questions.append(build(len(questions)))
        except QuestionError as exc:
            if on_error != "skip":
                raise
            skipped.append(str(exc))
    return questions, skipped


def _read_lines(
    bench: Benchmark,
    data: Path,
    image_root: Path | None,
    on_error: OnError,
    read: Callable[[Benchmark, _Line, Path | None], Question],
) -> tuple[list[Question], list[str]]:
    return _gather(((lambda _, line=line: read(bench, line, image_root)) for line in _lines(data)), on_error)


def _caption(data: Path, i: int, entry: Any, bench: Benchmark, image_root: Path | None) -> Question:
    """The question of ``images[i]`` of a COCO-style caption JSON."""
    if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("image"), str):
        raise QuestionError(f"{data}: images[{i}]: needs 'id' and 'image', got {entry!r}")
    try:
        image_id = int(entry["id"])  # the original writes int(image_id)
    except (TypeError, ValueError):
        raise QuestionError(f"{data}: images[{i}]: 'id' must be an integer, got {entry['id']!r}") from None
    try:
        path = _image(_Line(data, i, ""), entry["image"], image_root)
    except QuestionError as exc:
        raise QuestionError(f"{data}: images[{i}]: {str(exc).split(': ', 1)[1]}") from None
    prompt = bench.prompt.format(entry["image"])
    return Question(image_id, i, f"{data}: images[{i}]", prompt, [path])


def _captions(
    bench: Benchmark, data: Path, image_root: Path | None, on_error: OnError
) -> tuple[list[Question], list[str]]:
    try:
        images = json.loads(data.read_text(encoding="utf-8"))["images"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise QuestionError(f"{data}: not a COCO-style caption JSON with an 'images' list ({exc})") from None
    if not isinstance(images, list):
        raise QuestionError(f"{data}: 'images' must be a list")
    return _gather(
        (
            (lambda _, i=i, entry=entry: _caption(data, i, entry, bench, image_root))
            for i, entry in enumerate(images)
        ),
        on_error,
    )


def _mme_question(task: str, line: _Line, index: int, bench: Benchmark, image_root: Path | None) -> Question:
    """The question of one line of an MME task file: ``image<TAB>question<TAB>answer``."""
    parts = line.text.strip().split("\t")
    if len(parts) != 3:
        raise line.error(f"expected image<TAB>question<TAB>answer, got {len(parts)} field(s)")
    image, question, answer = parts
    ref = os.path.join("images", task, image)  # as mme/eval.py builds it
    query = bench.prompt.format(ref, question)
    fields = {"task": task, "image": image, "question": question, "gt_answer": answer}
    return Question(
        f"{task}/{line.number}", index, line.source, query, [_image(line, ref, image_root)], fields=fields
    )


def _mme(
    bench: Benchmark, data: Path, image_root: Path | None, on_error: OnError
) -> tuple[list[Question], list[str]]:
    return _gather(
        (
            (lambda index, task=task, line=line: _mme_question(task, line, index, bench, image_root))
            for task, path in mme_task_files(data)
            for line in _lines(path)
        ),
        on_error,
    )


def read_questions(
    bench: Benchmark, data: str | Path, image_root: str | Path | None = None, on_error: OnError = "stop"
) -> tuple[list[Question], list[str]]:
    """Every question of ``data`` for ``bench``, in file order, and one line per question left out.

    Args:
        bench: the catalog entry.
        data: the benchmark's file (or, for MME, its folder of task files).
        image_root: the folder relative picture paths resolve against (None: the current directory).
        on_error: ``"stop"`` raises on the first bad question; ``"skip"`` leaves it out and returns its line.

    Raises:
        QuestionError: the file cannot be read, or (``on_error="stop"``) a question cannot be asked.
    """
    data = Path(data)
    root = Path(image_root) if image_root is not None else None
    if not data.exists():
        raise QuestionError(f"--data {data}: no such file")
    family = bench.family
    if family == "caption":
        return _captions(bench, data, root, on_error)
    if family == "mme":
        return _mme(bench, data, root, on_error)
    if family == "grounding":
        return _read_lines(bench, data, root, on_error, _grounding)
    if family == "choice":
        return _read_lines(bench, data, root, on_error, _seed if bench.name == SEED_NAME else _scienceqa)
    if family in VQA_FAMILIES:
        return _read_lines(bench, data, root, on_error, _vqa)
    raise QuestionError(f"benchmark {bench.name!r}: family {family!r} has no question reader")
