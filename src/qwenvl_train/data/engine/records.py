"""Data files -> records -> samples (:class:`~qwenvl_train.format.sample.Sample`): JSON / JSON Lines read with one-line errors
instead of crashes.

Accepted input (the original Qwen-VL format)::

    [{"id": "identity_0", "conversations": [
        {"from": "system", "value": "You are a careful annotator."},   # optional, first turn only
        {"from": "user", "value": "Picture 1: <img>images/a.png</img>\\nWhat is this?"},
        {"from": "assistant", "value": "A cat."}]}]

- A ``.json`` file holds a list of samples (or one sample object); a ``.jsonl`` / ``.ndjson`` file holds one
  sample per line. Gzip-compressed files (``.json.gz``, ``.jsonl.gz``, or any file starting with gzip's magic
  bytes) are read as they are decompressed; other compressions are refused with one line saying to decompress.
  The standard input given as ``-`` or ``/dev/stdin`` is read once as JSON Lines (:mod:`.streams`); any other
  file that is not a regular file (a FIFO, a device, a socket) is refused before it is opened. A file whose
  content is the other format is read for what it is, with a note: a ``.json`` file of JSON Lines, a ``.jsonl``
  file holding one JSON list or pretty-printed objects spread over several lines. Several files are
  concatenated.
- Roles: ``user`` (alias ``human``), ``assistant`` (alias ``gpt``), ``system`` (first turn only; it
  replaces the default system prompt for that sample). Case is ignored (``Human``, ``GPT``); spaces are
  not (``"user "`` is an error).
- ``id`` is optional (string or integer); without it a sample is called ``#N``, its 0-based position
  in its file. Other keys are ignored.
- An assistant turn may carry ``"train": false``: it stays in the conversation as context the model reads, but
  none of it is trained (OpenAI's ``"weight": 0``); ``true`` is the default. On any other turn only ``true`` is
  accepted (user and system turns are never trained).

Files are read incrementally (:class:`FileRecords`, over :mod:`.reader`): JSON Lines line by line, a JSON
list element by element, so that neither the whole text nor all the decoded objects are ever held at once; each
record is decoded where it is scanned (:func:`sample_from_record`), typically in a worker process.

This module checks structure only (types, keys, role names); the order of the turns and their content are
checked by :mod:`..rules`. Every problem becomes a :class:`DataProblem` naming the file, line/column where
known, sample id and turn index (0-based position in ``conversations``); reading never stops at the first
bad sample, and a sample keeps its well-formed turns next to its errors so that later stages can report
their problems too.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from ...format.sample import ROLE_ALIASES, DataProblem, Sample, Turn
from ..filekinds import special_kind
from . import streams
from .reader import (
    Cursor,
    JsonSyntaxError,
    TextDecodeError,
    TextStream,
    is_json,
    iter_lines,
    iter_list,
    iter_values,
)

JSONL_SUFFIXES = (".jsonl", ".ndjson")
GZIP_MAGIC = b"\x1f\x8b"
UNSUPPORTED_COMPRESSION = (".bz2", ".xz", ".lzma", ".zst", ".zip", ".7z", ".lz4", ".tar", ".tgz")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _resolve_role(role: str) -> str | None:
    """The canonical role, or None. Case is ignored; spaces are not."""
    return ROLE_ALIASES.get(role) or ROLE_ALIASES.get(role.lower())


def sample_from_object(obj: Any, file: Path, index: int, line: int | None) -> Sample:
    """Validate the structure of one decoded JSON object as a sample.

    Returns:
        The sample with every structural problem in ``errors`` (empty when well-formed).
    """
    default_id = f"#{index}"
    sample = Sample(default_id, [], None, file, line)

    def err(reason: str, turn: int | None = None) -> None:
        sample.errors.append(DataProblem(str(file), reason, sample.id, turn, line))

    if not isinstance(obj, dict):
        err(f"sample is a {_type_name(obj)}, expected an object")
        return sample
    raw_id = obj.get("id", None)
    if raw_id is not None:
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            err(f"'id' is a {_type_name(raw_id)}, expected a string or integer")
            return sample
        sample.id, sample.explicit_id = str(raw_id), True
    if "conversations" not in obj:
        keys = ", ".join(repr(k) for k in list(obj)[:6]) or "none"
        err(f"missing key 'conversations' (keys: {keys})")
        return sample
    conv = obj["conversations"]
    if not isinstance(conv, list):
        err(f"'conversations' is a {_type_name(conv)}, expected a list")
        return sample
    if not conv:
        err("empty conversations")
        return sample

    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            err(f"turn is a {_type_name(turn)}, expected an object", i)
            continue
        missing = [k for k in ("from", "value") if k not in turn]
        if missing:
            err(f"missing key {missing[0]!r} in turn", i)
            continue
        role, value = turn["from"], turn["value"]
        if not isinstance(role, str):
            err(f"'from' is a {_type_name(role)}, expected a string", i)
            continue
        if not isinstance(value, str):
            err(f"'value' is a {_type_name(value)}, expected a string", i)
            continue
        resolved = _resolve_role(role)
        trained = turn.get("train", True)
        if not isinstance(trained, bool):
            err(f"'train' is a {_type_name(trained)}, expected true or false", i)
            continue
        if resolved is not None and not trained and resolved != "assistant":
            err(f"'train': false on a {role!r} turn: only assistant turns are trained", i)
            continue
        if resolved is None:
            hint = " (no spaces around a role)" if _resolve_role(role.strip()) else ""
            err(
                f"unknown role {role!r}{hint} (expected user/human, assistant/gpt, or a first system turn)",
                i,
            )
        elif resolved == "system":
            if i != 0:
                err("a system turn is only allowed as the first turn", i)
            else:
                sample.system = value
        else:
            sample.turns.append(Turn(resolved, value, i, trained))
    return sample


class Record(NamedTuple):
    """One record of a data file as read, not yet decoded: its JSON text, the 1-based line where it starts, and
    its 0-based position among the file's records (what ``#N`` names a sample without id by)."""

    text: str
    line: int
    index: int


class FileRecords:
    """The records of one data file, read incrementally (see the module docstring for what is accepted).

    Iterate for the :class:`Record` s; afterwards ``errors`` holds what cost the whole file (unreadable, not JSON,
    empty) and ``notes`` remarks about its format. Only the record being read is held in memory, so a whole-file
    error may come after records were given out: whoever consumed them forgets them (the scan counts nothing
    from a file with errors, nor does :func:`read_samples`).

    Attributes:
        file: the file.
        errors: whole-file problems (complete once iteration ends).
        notes: remarks that are not errors (meaningful only when ``errors`` is empty).
    """

    def __init__(self, path: str | Path) -> None:
        self.file = Path(path)
        self.errors: list[DataProblem] = []
        self.notes: list[str] = []
        self._open_files: list[BinaryIO] = []
        self._reading: TextStream | None = None  # the stream the records come from

    @property
    def bytes_read(self) -> int:
        """How far into the file the records have been read, in bytes (for progress bars)."""
        if self._reading is None:
            return 0
        compressed = getattr(self._reading.fh, "fileobj", None)  # a gzip file: how far into the file on disk
        return compressed.tell() if compressed is not None else self._reading.bytes_read

    def _whole_file(self, reason: str, line: int | None = None, col: int | None = None) -> None:
        self.errors.append(DataProblem(str(self.file), reason, line=line, col=col, whole_file=True))

    def __iter__(self) -> Iterator[Record]:
        refused = self._refusal()
        if refused is not None:
            self._whole_file(refused)
        else:
            count = 0
            try:
                for count, (text, line) in enumerate(self._values(), start=1):
                    yield Record(text, line, count - 1)
            except (OSError, EOFError, zlib.error, TextDecodeError) as exc:
                self._whole_file(f"cannot read: {exc}")
            except JsonSyntaxError as exc:
                self._whole_file(f"bad JSON: {exc.reason}", exc.line, exc.col)
            finally:
                for fh in reversed(self._open_files):
                    fh.close()
                self._open_files.clear()
            if not count and not self.errors:
                self._whole_file("no samples in file")

    def _refusal(self) -> str | None:
        """Why the file cannot be read at all (checked before it is opened), else None."""
        name = str(self.file)
        if streams.is_stream(name):
            return streams.refusal(name)
        try:
            mode = os.stat(self.file).st_mode
        except FileNotFoundError:
            return "no such file"
        except OSError as exc:
            return f"cannot read: {exc.strerror or exc}"
        if self.file.is_dir():
            return "is a directory, expected a .json or .jsonl file"
        kind = special_kind(mode)
        if kind is not None:
            return (
                f"is {kind}, not a data file: give a regular .json or .jsonl file, or - to read JSON Lines from "
                "the standard input"
            )
        suffix = self.file.suffix.lower()
        if suffix in UNSUPPORTED_COMPRESSION:
            return (
                f"compressed {suffix} files are not read: decompress it first (gzip files, .json.gz / .jsonl.gz, "
                "are)"
            )
        return None

    @property
    def jsonl(self) -> bool:
        """The file is named as JSON Lines (``.jsonl``, ``.ndjson``, also gzipped), or is the standard input."""
        name = self.file.with_suffix("") if self.file.suffix.lower() == ".gz" else self.file
        return name.suffix.lower() in JSONL_SUFFIXES or streams.is_stream(str(self.file))

    def _cursor(self) -> Cursor:
        """A cursor at the start of the file (a new handle each time: the file may be read more than once);
        gzip-compressed content is decompressed as it is read."""
        raw = open(streams.source(str(self.file)), "rb")  # noqa: SIM115 - closed when the iteration ends
        self._open_files.append(raw)
        fh: BinaryIO = raw
        if raw.peek(2)[:2] == GZIP_MAGIC:
            fh = gzip.GzipFile(fileobj=raw, mode="rb")
            self._open_files.append(fh)
        return Cursor(TextStream(fh))

    def _from(self, cursor: Cursor) -> Cursor:
        """``cursor``, recorded as the one the records come from."""
        self._reading = cursor.stream
        return cursor

    def _values(self) -> Iterator[tuple[str, int]]:
        """``(text, line)`` of every record, in the format the content turns out to be."""
        cursor = self._from(self._cursor())
        first = cursor.skip_whitespace()
        jsonl = self.jsonl
        if not first:
            self._whole_file("empty file")
        elif first == "[":
            if jsonl:
                self.notes.append(f"{self.file}: holds one JSON list, not JSON Lines; read as JSON")
            yield from iter_list(cursor)
        elif jsonl:
            yield from self._json_lines()
        else:
            yield from self._one_value_or_lines(cursor, first)

    def _one_value_or_lines(self, cursor: Cursor, first: str) -> Iterator[tuple[str, int]]:
        """A ``.json`` file that is not a list: one sample object, or JSON Lines (with a note)."""
        value = cursor.value()
        if not cursor.skip_whitespace():
            yield value
            return
        if first != "{":
            raise cursor.error("Extra data", cursor.pos)
        self.notes.append(f"{self.file}: holds JSON Lines, not a JSON list; read as JSON Lines")
        yield from self._lines(self._from(self._cursor()))

    def _json_lines(self) -> Iterator[tuple[str, int]]:
        """A ``.jsonl`` file: one value per line; or, when its first line is not JSON but the whole file is JSON
        written over several lines per sample, those values (with a note)."""
        lines = self._lines(self._from(self._cursor()))
        first = next(lines, None)
        if first is None:
            return
        if not is_json(first[0]):
            if self._all_values():
                self.notes.append(
                    f"{self.file}: holds JSON written over several lines per sample, not JSON Lines (one sample "
                    "per line); read as JSON"
                )
                yield from iter_values(self._from(self._cursor()))
                return
        yield first
        yield from lines

    def _all_values(self) -> bool:
        """The whole file is JSON values one after another (read through once more, nothing kept)."""
        try:
            for _ in iter_values(self._cursor()):
                pass
        except JsonSyntaxError:
            return False
        return True

    @staticmethod
    def _lines(cursor: Cursor) -> Iterator[tuple[str, int]]:
        """The lines that are not blank (a line that is not JSON is a record too, an error of its own)."""
        for line, number in iter_lines(cursor.stream):
            if line.strip():
                yield line, number


def sample_from_record(record: Record, file: Path) -> Sample:
    """Decode one record and validate its structure; a record that is not JSON (a JSON Lines line), or that
    Python's decoder cannot turn into objects (nesting deeper than the recursion limit, an integer longer than the
    digit limit), is a sample with one bad-JSON error, its record lost."""
    try:
        obj = json.loads(record.text)
    except json.JSONDecodeError as exc:
        error = DataProblem(str(file), f"bad JSON: {exc.msg}", line=record.line, col=exc.colno)
        return Sample(f"#{record.index}", [], None, file, record.line, [error])
    except (RecursionError, ValueError) as exc:
        error = DataProblem(str(file), f"bad JSON: {undecodable(exc)}", line=record.line)
        return Sample(f"#{record.index}", [], None, file, record.line, [error])
    return sample_from_object(obj, file, record.index, record.line)


def undecodable(exc: BaseException) -> str:
    """Why Python's decoder refused valid-looking JSON, in one line."""
    if isinstance(exc, RecursionError):
        return "nested too deeply to decode (more levels than Python's recursion limit)"
    reason = str(exc).split(";")[
        0
    ]  # the int digit limit's advice names a Python function: not the user's fix
    return f"cannot decode ({reason})"


def read_samples(paths: str | Path | Iterable[str | Path]) -> tuple[list[Sample], list[DataProblem]]:
    """Read and concatenate the structurally valid samples of several files (in the order given).

    Args:
        paths: one path or several.

    Returns:
        The samples without structural errors, and every error (whole-file ones and those of samples).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    samples: list[Sample] = []
    errors: list[DataProblem] = []
    for path in paths:
        records = FileRecords(path)
        read = [sample_from_record(record, records.file) for record in records]
        if records.errors:  # the whole file is lost: nothing of it counts
            errors += records.errors
            continue
        for sample in read:
            errors += sample.errors
            if not sample.errors:
                samples.append(sample)
    return samples, errors
