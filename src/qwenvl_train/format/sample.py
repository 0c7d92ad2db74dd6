"""The sample types of the Qwen-VL format: a conversation's turns, one sample as read, one problem found in it.

A sample is what one record of a data file holds once its structure is checked (by the data layer's reader):
its user/assistant :class:`Turn` s with their roles resolved, its optional system prompt, where it came from,
and the structural problems found while reading it. Every problem, structural or found later (shape, markup,
images), is a :class:`DataProblem`: a record printed as one line naming file, sample and turn, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: The roles a conversation's turns take (a system turn is the sample's ``system``, not a turn).
ROLES: tuple[str, ...] = ("user", "assistant")

#: The ``from`` values accepted in data files and the role each means (case is ignored when reading).
ROLE_ALIASES: dict[str, str] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "system": "system",
}


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation.

    Attributes:
        role: ``"user"`` or ``"assistant"`` (aliases are resolved when reading).
        value: the text with its markup.
        index: position in the sample's ``conversations`` list (0-based), for error messages.
        trained: an assistant turn is trained on (the default); False (``"train": false`` in the data, OpenAI's
            ``"weight": 0``) keeps it as context the model reads but gives none of its block a label.
    """

    role: str
    value: str
    index: int
    trained: bool = True


@dataclass(frozen=True)
class DataProblem:
    """One problem in the data, printed as a single line.

    Attributes:
        file: the data file.
        reason: what is wrong (one line).
        sample_id: the sample's id (or ``#N``), None for file-level problems.
        turn: 0-based index in ``conversations``, None when not about one turn.
        line: 1-based line in the file, when known.
        col: 1-based column, when known (bad JSON).
        whole_file: the problem cost the whole file (unreadable, or bad JSON in a ``.json`` list), not
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
class Sample:
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
    errors: list[DataProblem] = field(default_factory=list)
    explicit_id: bool = False

    def error(self, reason: str, turn: int | None = None) -> DataProblem:
        """A :class:`DataProblem` about this sample."""
        return DataProblem(str(self.file), reason, self.id, turn, self.line)
