"""Multiple choice (ScienceQA, SEED-Bench image): the chosen option against the answer.

The original picks the option letter with the lowest loss; a saved prediction is that option as a letter
(``"B"``, SEED's result files) or a 0-based index (``1``). Gold answers are an index (ScienceQA's ``answer``) or a
letter (SEED's). Anything else is no choice and scores 0. Both scorings agree.
"""

from __future__ import annotations

from typing import Any


def choice_index(value: Any) -> int | None:
    """The 0-based option ``value`` names: an int, a digit string, or one letter ``A``-``Z`` (either case)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        if len(text) == 1 and "A" <= text.upper() <= "Z":
            return ord(text.upper()) - ord("A")
    return None


def choice_score(prediction: Any, answer: Any) -> float:
    """1.0 when the predicted option is the gold option, else 0.0."""
    predicted = choice_index(prediction)
    return float(predicted is not None and predicted == choice_index(answer))
