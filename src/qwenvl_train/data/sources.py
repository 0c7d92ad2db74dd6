"""The sample types of the data: one record of a data file as read (:class:`RawSample`, its turns being
:class:`~.chat.Turn` s) and one problem found in the data (:class:`DataError`: a record printed as one line, not an
exception), with the role names a data file may use (:data:`ROLE_ALIASES`).

Reading files into these is the scan engine's (:mod:`.engine.records`); every stage after it reports its
problems as :class:`DataError` s too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .chat import Turn

ROLE_ALIASES: dict[str, str] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "system": "system",
}


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


@dataclass
class RawSample:
    """One record of a data file, before rendering.

    Attributes:
        id: the sample id (or ``#N``).
        turns: the well-formed user/assistant turns (roles resolved), in order.
        system: the sample's system prompt, or None for the default.
        file: the file it came from (images are relative to its folder).
        line: 1-based line where the sample starts.
        errors: structural problems (bad JSON, wrong types, missing keys, unknown roles); a sample with
            any cannot be trained, but its well-formed turns are still checked.
        explicit_id: the id was written in the data (not the ``#N`` stand-in).
    """

    id: str
    turns: list[Turn]
    system: str | None
    file: Path
    line: int | None = None
    errors: list[DataError] = field(default_factory=list)
    explicit_id: bool = False

    def error(self, reason: str, turn: int | None = None) -> DataError:
        """A :class:`DataError` about this sample."""
        return DataError(str(self.file), reason, self.id, turn, self.line)
