"""The rules a conversation must follow beyond its JSON structure: shape and content.

Shape: after an optional leading system turn, turns alternate user / assistant, starting with the user and
ending with the assistant. Under the ``reference`` label policy a leading assistant turn is dropped first,
as the original ``finetune.py`` did (reported as a change to the data, not an error).

Content: no empty value (nor one of only whitespace), no image inside an assistant turn (Qwen-VL cannot emit
images), and no markup (``<img>``, ``<ref>``, ``<box>``, ``<quad>``) in the system turn, which is plain text.

Every check returns :class:`DataError` lines naming file, sample and turn; none stops at the first problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from .chat import Policy, Turn
from .markup import TAG_RE, ParsedValue
from .sources import DataError, RawSample

SYSTEM_TURN = 0  # a system turn is only accepted as the first one


class Shaped(NamedTuple):
    """The turns to render, whether a leading turn was dropped (``reference``), and the shape errors."""

    turns: list[Turn]
    dropped_first_turn: bool
    errors: list[DataError]


def check_shape(sample: RawSample, policy: Policy) -> Shaped:
    """Check the order of the turns and apply the ``reference`` policy's drop of a leading assistant turn.

    The caller skips this for samples with structural errors (a missing or unknown role makes the order
    meaningless, and would only add follow-on errors).
    """
    turns = list(sample.turns)
    if not turns:
        return Shaped(turns, False, [sample.error("no user or assistant turns (only a system turn)")])
    if not any(t.role == "assistant" for t in turns):
        return Shaped(turns, False, [sample.error("no assistant turn: nothing to train on")])
    dropped = policy == "reference" and turns[0].role != "user"
    if dropped:
        turns = turns[1:]
        if not any(t.role == "assistant" for t in turns):
            reason = "no assistant turn left after the reference policy dropped the leading assistant turn"
            return Shaped(turns, True, [sample.error(reason, turns[0].index if turns else None)])
    errors: list[DataError] = []
    for position, turn in enumerate(turns):
        expected = "user" if position % 2 == 0 else "assistant"
        if turn.role == expected:
            continue
        if position == 0:
            reason = "the conversation starts with an assistant turn: the first turn must be from the user"
        else:
            reason = f"two {turn.role} turns in a row: turns must alternate user, assistant, user, ..."
        errors.append(sample.error(reason, turn.index))
        break  # one misplaced turn misaligns every turn after it: report it once
    if turns[-1].role != "assistant":
        errors.append(
            sample.error(
                "the conversation ends with a user turn: the last turn must be from the assistant",
                turns[-1].index,
            )
        )
    return Shaped(turns, dropped, errors)


def check_values(sample: RawSample, turns: Sequence[Turn]) -> list[DataError]:
    """Empty values of ``turns`` and of the system turn, and markup in the system turn."""
    errors: list[DataError] = []
    if sample.system is not None:
        if not sample.system.strip():
            errors.append(sample.error("empty value", SYSTEM_TURN))
        tag = TAG_RE.search(sample.system)
        if tag:
            errors.append(
                sample.error(
                    f"markup in the system turn ({tag.group(0)} at character {tag.start()}): the system "
                    "prompt is plain text",
                    SYSTEM_TURN,
                )
            )
    for turn in turns:
        if not turn.value.strip():
            errors.append(sample.error("empty value", turn.index))
    return errors


def check_parsed(
    sample: RawSample, turns: Sequence[Turn], parsed: Sequence[ParsedValue | None]
) -> list[DataError]:
    """Images inside assistant turns (the model cannot produce images)."""
    return [
        sample.error(
            "an image in an assistant turn: Qwen-VL cannot produce images (put it in a user turn)", t.index
        )
        for t, value in zip(turns, parsed, strict=True)
        if value is not None and t.role == "assistant" and value.images
    ]
