"""MME as its eval_tool's ``calculation.py`` scores it.

Each answer is read as yes / no / other: the lower-cased answer is ``yes`` or ``no``, or else its first four
characters contain ``yes`` (checked first) or ``no`` (so ``"Not sure"`` reads as no). A task's lines go in pairs,
two questions per picture, in the order of the task file. A task scores ``acc + acc+`` on a 0-200 scale: acc is
the share of questions answered right, acc+ the share of pairs with both right. Perception sums the ten
perception tasks, cognition the four cognition tasks (so up to 2000 and 800). Both scorings agree.
"""

from __future__ import annotations

from collections.abc import Sequence

PERCEPTION_TASKS = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION_TASKS = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
MME_TASKS = PERCEPTION_TASKS + COGNITION_TASKS


def parse_yes_no(answer: str) -> str:
    """``"yes"``, ``"no"`` or ``"other"``, as ``calculation.py`` reads an answer."""
    text = answer.lower()
    if text in ("yes", "no"):
        return text
    if "yes" in text[:4]:
        return "yes"
    if "no" in text[:4]:
        return "no"
    return "other"


def mme_task_scores(gold: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
    """``acc``, ``acc_plus`` (each 0-100) and ``score`` (their sum) of one task.

    Args:
        gold: the ``yes`` / ``no`` of each line of the task file, in order (an even number: two per picture).
        answers: the model's answer to each line.
    """
    if len(gold) != len(answers) or len(gold) % 2:
        raise ValueError("an MME task needs one answer per line and two lines per picture")
    right = [g.lower() == parse_yes_no(a) for g, a in zip(gold, answers, strict=True)]
    if not right:
        return {"acc": 0.0, "acc_plus": 0.0, "score": 0.0}
    # Fractions first, then * 100, as calculation.py does (the last digit of its printed sums depends on it).
    acc = sum(right) / len(right) * 100
    pairs = len(right) // 2
    acc_plus = sum(right[2 * i] and right[2 * i + 1] for i in range(pairs)) / pairs * 100
    return {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}
