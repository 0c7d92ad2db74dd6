"""ChartQA's relaxed accuracy (pix2struct's ``relaxed_correctness``), called as ``evaluate_vqa.py`` calls it.

pix2struct's rule: when both strings read as numbers (``x%`` reads as ``x / 100``) and the *target* is not 0, the
answer is right when ``|prediction - target| / |target| <= 5 %``; otherwise the lower-cased strings must be
equal. ``evaluate_vqa.py`` passes the model's (stripped) answer as the target and each gold answer as the
prediction, so ``original`` measures the 5 % relative to the model's answer; ``official`` measures it relative to
the gold answer, as pix2struct and the ChartQA paper define it. Numbers are read by Python's ``float`` exactly
as the script does (``1,234`` is not a number and compares as a string; ``1_000`` and `` 12 `` are numbers).
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_RELATIVE_CHANGE = 0.05


def to_float(text: str) -> float | None:
    """The number ``text`` reads as (``x%`` is ``x / 100``), or None."""
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correct(target: str, prediction: str, max_relative_change: float = MAX_RELATIVE_CHANGE) -> bool:
    """pix2struct's relaxed correctness: the tolerance is relative to ``target``."""
    prediction_value = to_float(prediction)
    target_value = to_float(target)
    if prediction_value is not None and target_value:
        return abs(prediction_value - target_value) / abs(target_value) <= max_relative_change
    return prediction.lower() == target.lower()


def relaxed_score(prediction: str, answers: Sequence[str], scoring: str = "original") -> float:
    """1.0 when the model's answer is relaxed-correct for any gold answer, else 0.0."""
    answer = prediction.strip()
    if scoring == "official":
        return float(any(relaxed_correct(gold, answer) for gold in answers))
    return float(any(relaxed_correct(answer, gold) for gold in answers))
