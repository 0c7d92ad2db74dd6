"""``--save-predictions``: answers written as they come, so that an interrupted run resumes where it stopped.

The file is JSON Lines, one object per question, appended and flushed after every batch (nothing is rewritten). A
run killed in the middle of a write leaves a torn last line: it is ignored when read and cut off before the next
append, so the question is simply asked again.

Under torchrun each rank appends to its own part file beside it, ``FILE.rank<R>.part``; at the end rank 0 appends
the parts' objects to ``FILE`` in question order (those not already there) and deletes the parts. A resumed run
reads ``FILE`` and every part left by an interrupted run (whatever its number of ranks), so no answer is lost.

``-``, a FIFO or a device (``/dev/stdout``) is a stream (:mod:`qwenvl_train.outputs`): the answers are written
through to it as they come, never read back, so it takes neither ``--resume`` nor torchrun's part files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from ..errors import UserError
from .catalog import Benchmark


class PredictionLogError(UserError, ValueError):
    """A predictions file cannot be read or written; one line naming it."""


def id_key(bench: Benchmark) -> str:
    """The key naming the question in a prediction: the catalog's ``id_key``, ``question_id`` where the original
    names none (the id is then the data's ``question_id`` or line number)."""
    return bench.id_key or "question_id"


def record_id(bench: Benchmark, record: dict[str, Any]) -> str | None:
    """The id of a prediction, as a string (ids compare as strings), or None without one."""
    value = record.get(id_key(bench))
    return None if value is None else str(value)


def prediction_record(
    bench: Benchmark, question_id: Any, answer: str, fields: dict[str, Any] | None = None
) -> dict:
    """One prediction as the original writes it: the id under its key and the text under ``answer`` (captions:
    ``image_id`` and ``caption``), with ``fields`` after them."""
    if bench.family == "caption":
        return {"image_id": int(question_id), "caption": answer}
    return {id_key(bench): question_id, "answer": answer, **(fields or {})}


def part_path(path: Path, rank: int) -> Path:
    """Rank ``rank``'s part file beside ``path``."""
    return path.with_name(f"{path.name}.rank{rank}.part")


def part_paths(path: Path) -> list[Path]:
    """Every part file beside ``path``, by rank."""
    found = path.parent.glob(f"{path.name}.rank*.part") if path.parent.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[len(path.name) + 5 : -5] or 0))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The objects of a predictions file (none if it does not exist); a torn last line is ignored.

    Raises:
        PredictionLogError: a line before the last is not a JSON object.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise PredictionLogError(f"{path}: cannot read ({exc})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):  # written when the run was killed
                break
            raise PredictionLogError(f"{path}:{number}: not a JSON object") from None
        if not isinstance(record, dict):
            raise PredictionLogError(f"{path}:{number}: not a JSON object")
        records.append(record)
    return records


def saved_records(path: Path) -> list[dict[str, Any]]:
    """The objects of ``path`` and of its part files."""
    records = read_records(path)
    for part in part_paths(path):
        records += read_records(part)
    return records


def is_stream(path: Path) -> bool:
    """``path`` is ``-``, a FIFO or a device: written through, never read back (a directory or a socket is
    :class:`~qwenvl_train.outputs.OutputError`'s one line)."""
    from ..outputs import output_target

    return output_target(path, "--save-predictions") != "file"


def _open_append(path: Path) -> IO[str]:
    """``path`` opened for appending, a torn last line cut off first; a stream opened as it is."""
    from ..outputs import STDOUT

    if is_stream(path):
        if os.fspath(path) == STDOUT:
            return open(os.dup(1), "a", encoding="utf-8")
        return path.open("a", encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with path.open("r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)
    return path.open("a", encoding="utf-8")


class PredictionLog:
    """Appends predictions to a JSON Lines file, flushed (and synced) after each :meth:`write`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stream = is_stream(path)
        try:
            self._file = _open_append(path)
        except OSError as exc:
            raise PredictionLogError(f"{path}: cannot write ({exc.strerror or exc})") from None

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Append ``records``, one line each, and flush them to disk."""
        self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._file.flush()
        if not self.stream:  # a pipe or a terminal cannot be synced
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_parts(path: Path, bench: Benchmark, order: dict[str, int]) -> int:
    """Append the part files' predictions to ``path`` (those whose id ``path`` lacks, in question order), then
    delete the parts. Returns how many were appended. ``order``: the question index of each id."""
    parts = part_paths(path)
    if not parts:
        return 0
    have = {record_id(bench, r) for r in read_records(path)}
    new: dict[str, dict[str, Any]] = {}
    for part in parts:
        for record in read_records(part):
            rid = record_id(bench, record)
            if rid not in have and rid not in new:
                new[rid] = record
    ordered = sorted(new.items(), key=lambda kv: order.get(kv[0], len(order)))
    with PredictionLog(path) as log:
        log.write(record for _, record in ordered)
    for part in parts:
        part.unlink()
    return len(ordered)
