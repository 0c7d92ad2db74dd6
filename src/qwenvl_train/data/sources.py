"""Read conversation samples from JSON / JSON Lines files, with one-line errors instead of crashes.

Accepted input (the original Qwen-VL format)::

    [{"id": "identity_0", "conversations": [
        {"from": "system", "value": "You are a careful annotator."},   # optional, first turn only
        {"from": "user", "value": "Picture 1: <img>images/a.png</img>\\nWhat is this?"},
        {"from": "assistant", "value": "A cat."}]}]

- A ``.json`` file holds a list of samples (or one sample object); a ``.jsonl`` / ``.ndjson`` file, or a
  ``.json`` file that is really JSON Lines, holds one sample per line. Several files are concatenated.
- Roles: ``user`` (alias ``human``), ``assistant`` (alias ``gpt``), ``system`` (first turn only; it
  replaces the default system prompt for that sample). Case is ignored.
- ``id`` is optional (string or integer); without it a sample is called ``#N``, its 0-based position
  in its file. Other keys are ignored.

Every problem becomes a :class:`DataError` naming the file, line/column where known, sample id and
turn index (0-based position in ``conversations``); reading never stops at the first bad sample.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chat import Turn

ROLE_ALIASES: dict[str, str] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "system": "system",
}
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class DataError:
    """One problem in the data, printed as a single line.

    Attributes:
        file: the data file.
        reason: what is wrong (one line).
        sample_id: the sample's id (or ``#N``), None for file-level problems.
        turn: 0-based index in ``conversations``, None when not about one turn.
        line: 1-based line in the file, when known.
        col: 1-based column, when known (bad JSON).
        whole_file: the error cost the whole file (unreadable, or bad JSON in a ``.json`` list), not
            one sample or one JSON Lines record.
    """

    file: str
    reason: str
    sample_id: str | None = None
    turn: int | None = None
    line: int | None = None
    col: int | None = None
    whole_file: bool = False

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.col}" if self.col is not None else "")
        parts = [where]
        if self.sample_id is not None:
            parts.append(f"sample {self.sample_id!r}")
        if self.turn is not None:
            parts.append(f"turn {self.turn}")
        reason = " ".join(self.reason.split("\n"))
        return ": ".join(parts) + ": " + reason


class DataValidationError(ValueError):
    """Raised when a dataset has errors and bad samples are not to be skipped."""

    def __init__(self, errors: Sequence[DataError], shown: int = 20) -> None:
        self.errors = list(errors)
        lines = [str(e) for e in self.errors[:shown]]
        more = len(self.errors) - shown
        if more > 0:
            lines.append(f"... and {more} more")
        super().__init__(
            f"{len(self.errors)} error(s) in the training data (run `qwenvl-train check-data` for the full "
            "report, or skip bad samples explicitly with on_error='skip'):\n  " + "\n  ".join(lines)
        )


@dataclass
class RawSample:
    """A structurally valid sample, before rendering.

    Attributes:
        id: the sample id (or ``#N``).
        turns: user/assistant turns (roles resolved).
        system: the sample's system prompt, or None for the default.
        file: the file it came from (images are relative to its folder).
        line: 1-based line where the sample starts.
    """

    id: str
    turns: list[Turn]
    system: str | None
    file: Path
    line: int | None = None

    def error(self, reason: str, turn: int | None = None) -> DataError:
        """A :class:`DataError` about this sample."""
        return DataError(str(self.file), reason, self.id, turn, self.line)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def sample_from_object(
    obj: Any, file: Path, index: int, line: int | None
) -> tuple[RawSample | None, list[DataError]]:
    """Validate one decoded JSON object as a sample.

    Returns:
        ``(sample, [])`` when valid, ``(None, errors)`` otherwise.
    """

    def err(reason: str, sample_id: str | None = None, turn: int | None = None) -> DataError:
        return DataError(str(file), reason, sample_id, turn, line)

    default_id = f"#{index}"
    if not isinstance(obj, dict):
        return None, [err(f"sample is a {_type_name(obj)}, expected an object", default_id)]
    raw_id = obj.get("id", None)
    if raw_id is None:
        sample_id = default_id
    elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return None, [err(f"'id' is a {_type_name(raw_id)}, expected a string or integer", default_id)]
    else:
        sample_id = str(raw_id)
    if "conversations" not in obj:
        keys = ", ".join(repr(k) for k in list(obj)[:6]) or "none"
        return None, [err(f"missing key 'conversations' (keys: {keys})", sample_id)]
    conv = obj["conversations"]
    if not isinstance(conv, list):
        return None, [err(f"'conversations' is a {_type_name(conv)}, expected a list", sample_id)]
    if not conv:
        return None, [err("empty conversations", sample_id)]

    errors: list[DataError] = []
    turns: list[Turn] = []
    system: str | None = None
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            errors.append(err(f"turn is a {_type_name(turn)}, expected an object", sample_id, i))
            continue
        missing = [k for k in ("from", "value") if k not in turn]
        if missing:
            errors.append(err(f"missing key {missing[0]!r} in turn", sample_id, i))
            continue
        role, value = turn["from"], turn["value"]
        if not isinstance(role, str):
            errors.append(err(f"'from' is a {_type_name(role)}, expected a string", sample_id, i))
            continue
        if not isinstance(value, str):
            errors.append(err(f"'value' is a {_type_name(value)}, expected a string", sample_id, i))
            continue
        resolved = ROLE_ALIASES.get(role.strip().lower())
        if resolved is None:
            errors.append(
                err(
                    f"unknown role {role!r} (expected user/human, assistant/gpt, or a first system turn)",
                    sample_id,
                    i,
                )
            )
        elif resolved == "system":
            if i != 0:
                errors.append(err("a system turn is only allowed as the first turn", sample_id, i))
            else:
                system = value
        else:
            turns.append(Turn(resolved, value, i))
    if errors:
        return None, errors
    if not turns:
        return None, [err("no user or assistant turns (only a system turn)", sample_id)]
    if not any(t.role == "assistant" for t in turns):
        return None, [err("no assistant turn: nothing to train on", sample_id)]
    return RawSample(sample_id, turns, system, file, line), []


class _LineIndex:
    """Character offset -> 1-based (line, column)."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

    def __call__(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.starts, offset)
        return line, offset - self.starts[line - 1] + 1


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _decode_json_list(text: str, file: Path) -> tuple[list[tuple[Any, int]], list[DataError]]:
    """Decode a JSON array element by element, keeping each element's start line."""
    decoder = json.JSONDecoder()
    where = _LineIndex(text)
    items: list[tuple[Any, int]] = []
    pos = _skip_ws(text, 0) + 1  # past '['
    pos = _skip_ws(text, pos)
    if pos < len(text) and text[pos] == "]":
        return items, []
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            return [], [
                DataError(str(file), f"bad JSON: {exc.msg}", line=exc.lineno, col=exc.colno, whole_file=True)
            ]
        items.append((obj, where(pos)[0]))
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            rest = _skip_ws(text, pos + 1)
            if rest < len(text):
                line, col = where(rest)
                return [], [
                    DataError(
                        str(file), "bad JSON: extra data after the list", line=line, col=col, whole_file=True
                    )
                ]
            return items, []
        line, col = where(pos)
        reason = "unexpected end of file" if pos >= len(text) else f"expected ',' or ']' at {text[pos]!r}"
        return [], [DataError(str(file), f"bad JSON: {reason}", line=line, col=col, whole_file=True)]


def _decode_json_lines(text: str, file: Path) -> tuple[list[tuple[Any, int]], list[DataError]]:
    items: list[tuple[Any, int]] = []
    errors: list[DataError] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            items.append((json.loads(line), lineno))
        except json.JSONDecodeError as exc:
            errors.append(DataError(str(file), f"bad JSON: {exc.msg}", line=lineno, col=exc.colno))
    return items, errors


def read_file(path: str | Path) -> tuple[list[RawSample], list[DataError]]:
    """Read every sample of one file.

    Returns:
        The valid samples and the errors; a file that cannot be read or decoded gives one error.
    """
    file = Path(path)
    if not file.exists():
        return [], [DataError(str(file), "no such file", whole_file=True)]
    if file.is_dir():
        return [], [DataError(str(file), "is a directory, expected a .json or .jsonl file", whole_file=True)]
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [DataError(str(file), f"cannot read: {exc}", whole_file=True)]

    start = _skip_ws(text, 0)
    if file.suffix.lower() in JSONL_SUFFIXES:
        items, errors = _decode_json_lines(text, file)
    elif start >= len(text):
        return [], [DataError(str(file), "empty file", whole_file=True)]
    elif text[start] == "[":
        items, errors = _decode_json_list(text, file)
    else:
        try:
            items, errors = [(json.loads(text), _LineIndex(text)(start)[0])], []
        except json.JSONDecodeError as exc:
            if text[start] == "{" and exc.msg == "Extra data":
                items, errors = _decode_json_lines(text, file)  # JSON Lines under a .json name
            else:
                return [], [
                    DataError(
                        str(file), f"bad JSON: {exc.msg}", line=exc.lineno, col=exc.colno, whole_file=True
                    )
                ]

    if not items and not errors:
        return [], [DataError(str(file), "no samples in file", whole_file=True)]
    samples: list[RawSample] = []
    for index, (obj, line) in enumerate(items):
        sample, sample_errors = sample_from_object(obj, file, index, line)
        errors.extend(sample_errors)
        if sample is not None:
            samples.append(sample)
    return samples, errors


def count_rejected(errors: Iterable[DataError]) -> tuple[int, int]:
    """``(samples, files)`` lost to reading errors: distinct samples (a bad JSON Lines record counts as
    one) and whole files (unreadable, or a ``.json`` list that does not parse)."""
    samples = {(e.file, e.sample_id, e.line) for e in errors if not e.whole_file}
    files = {e.file for e in errors if e.whole_file}
    return len(samples), len(files)


def read_samples(paths: str | Path | Iterable[str | Path]) -> tuple[list[RawSample], list[DataError]]:
    """Read and concatenate the samples of several files (in the order given).

    Args:
        paths: one path or several.

    Returns:
        All valid samples and all errors.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    samples: list[RawSample] = []
    errors: list[DataError] = []
    for path in paths:
        file_samples, file_errors = read_file(path)
        samples.extend(file_samples)
        errors.extend(file_errors)
    return samples, errors
