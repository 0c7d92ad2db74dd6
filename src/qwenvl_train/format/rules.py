"""The rules a conversation must follow beyond its JSON structure: shape and content.

Shape: after an optional leading system turn, turns alternate user / assistant, starting with the user and
ending with the assistant. Under the ``reference`` label policy a leading assistant turn is dropped first,
as the original ``finetune.py`` did (reported as a change to the data, not an error). At least one assistant
turn must be trained on: a turn marked ``"train": false`` is context only (see :mod:`.render`).

Content: no empty value (nor one of only whitespace), no image inside an assistant turn (Qwen-VL cannot emit
images), and no markup (``<img>``, ``<ref>``, ``<box>``, ``<quad>``) in the system turn, which is plain text.

The checks over a sample (:func:`check_shape`, :func:`check_values`, :func:`check_parsed`) return
:class:`~.sample.DataProblem` records naming file, sample and turn; none stops at the first problem. The rules
they are made of (:func:`expected_role`, :func:`first_misplaced`, :func:`has_assistant`,
:func:`has_trained`, :func:`ends_with_assistant`, :func:`drops_first_turn`) are also what rendering
(:func:`.render.render_conversation`) and evaluation (``inference.evaluate.eval_sample``) check, each with its
own messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

from .markup import ParsedValue, find_tag
from .sample import DataProblem, Sample, Turn

#: The label policies (see :mod:`.render`); ``reference`` also drops a leading turn not from the user.
Policy = Literal["assistant", "reference"]
POLICIES: tuple[str, ...] = get_args(Policy)
SYSTEM_TURN = 0  # a system turn is only accepted as the first one
UNTRAINED = 'every assistant turn is marked "train": false: nothing to train on'


def expected_role(position: int) -> str:
    """The role the turn at ``position`` (0-based, after a system turn) must have: user, assistant, user, ..."""
    return "user" if position % 2 == 0 else "assistant"


def first_misplaced(turns: Sequence[Turn]) -> tuple[int, Turn] | None:
    """The first turn out of the user/assistant alternation, with its position; None when they alternate."""
    for position, turn in enumerate(turns):
        if turn.role != expected_role(position):
            return position, turn
    return None


def has_assistant(turns: Sequence[Turn]) -> bool:
    """There is something to train on (or to score): at least one assistant turn."""
    return any(t.role == "assistant" for t in turns)


def has_trained(turns: Sequence[Turn]) -> bool:
    """Some assistant turn is trained on (not every one marked ``"train": false``)."""
    return any(t.role == "assistant" and t.trained for t in turns)


def ends_with_assistant(turns: Sequence[Turn]) -> bool:
    """The conversation ends with an assistant turn (the answer trained on, or scored)."""
    return bool(turns) and turns[-1].role == "assistant"


def drops_first_turn(turns: Sequence[Turn], policy: Policy) -> bool:
    """The ``reference`` policy drops a leading turn that is not from the user, as the original finetune.py did."""
    return policy == "reference" and bool(turns) and turns[0].role != "user"


class Shaped(NamedTuple):
    """The turns to render, whether a leading turn was dropped (``reference``), and the shape errors."""

    turns: list[Turn]
    dropped_first_turn: bool
    errors: list[DataProblem]


def check_shape(sample: Sample, policy: Policy) -> Shaped:
    """Check the order of the turns and apply the ``reference`` policy's drop of a leading assistant turn.

    The caller skips this for samples with structural errors (a missing or unknown role makes the order
    meaningless, and would only add follow-on errors).
    """
    turns = list(sample.turns)
    if not turns:
        return Shaped(turns, False, [sample.error("no user or assistant turns (only a system turn)")])
    if not has_assistant(turns):
        return Shaped(turns, False, [sample.error("no assistant turn: nothing to train on")])
    dropped = drops_first_turn(turns, policy)
    if dropped:
        turns = turns[1:]
        if not has_assistant(turns):
            reason = "no assistant turn left after the reference policy dropped the leading assistant turn"
            return Shaped(turns, True, [sample.error(reason, turns[0].index if turns else None)])
    if not has_trained(turns):
        return Shaped(turns, dropped, [sample.error(UNTRAINED)])
    errors: list[DataProblem] = []
    misplaced = first_misplaced(turns)  # one misplaced turn misaligns every turn after it: report it once
    if misplaced is not None:
        position, turn = misplaced
        if position == 0:
            reason = "the conversation starts with an assistant turn: the first turn must be from the user"
        else:
            reason = f"two {turn.role} turns in a row: turns must alternate user, assistant, user, ..."
        errors.append(sample.error(reason, turn.index))
    if not ends_with_assistant(turns):
        errors.append(
            sample.error(
                "the conversation ends with a user turn: the last turn must be from the assistant",
                turns[-1].index,
            )
        )
    return Shaped(turns, dropped, errors)


def check_values(sample: Sample, turns: Sequence[Turn]) -> list[DataProblem]:
    """Empty values of ``turns`` and of the system turn, and markup in the system turn."""
    errors: list[DataProblem] = []
    if sample.system is not None:
        if not sample.system.strip():
            errors.append(sample.error("empty value", SYSTEM_TURN))
        tag = find_tag(sample.system)
        if tag:
            errors.append(
                sample.error(
                    f"markup in the system turn ({tag.text} at character {tag.start}): the system "
                    "prompt is plain text",
                    SYSTEM_TURN,
                )
            )
    for turn in turns:
        if not turn.value.strip():
            errors.append(sample.error("empty value", turn.index))
    return errors


def check_parsed(
    sample: Sample, turns: Sequence[Turn], parsed: Sequence[ParsedValue | None]
) -> list[DataProblem]:
    """Images inside assistant turns (the model cannot produce images)."""
    return [
        sample.error(
            "an image in an assistant turn: Qwen-VL cannot produce images (put it in a user turn)", t.index
        )
        for t, value in zip(turns, parsed, strict=True)
        if value is not None and t.role == "assistant" and value.images
    ]
