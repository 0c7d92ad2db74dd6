"""Exact match as ``evaluate_vqa.py`` scores OCR-VQA, AI2D and (after its clean-up) GQA.

The answer is right when, stripped and lower-cased, it equals any stripped, lower-cased gold answer. GQA first
goes through :func:`gqa_clean_answer`, the script's clean-up, kept with its oddities: it splits on the first
``is `` / ``are `` / ``a `` / ``an `` / ``the `` *anywhere* in the text (``"tea cup"`` becomes ``"cup"``, since
``"tea cup"`` holds ``"a "``) and keeps what follows, and cuts at ``" of"``. Both scorings agree.
"""

from __future__ import annotations

from collections.abc import Sequence

_GQA_SPLIT_AFTER = ("is ", "are ", "a ", "an ", "the ")


def gqa_clean_answer(text: str) -> str:
    """The GQA clean-up of ``evaluate_vqa.py``: first sentence/clause, lower case, the words after a copula or
    article, the part before ``" of"``."""
    response = text.strip().split(".")[0].split(",")[0].split("!")[0].lower()
    for marker in _GQA_SPLIT_AFTER:
        if marker in response:
            response = response.split(marker)[1]
    if " of" in response:
        response = response.split(" of")[0]
    return response.strip()


def exact_match_score(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when ``prediction`` equals a gold answer after strip + lower, else 0.0."""
    predicted = prediction.strip().lower()
    return float(any(predicted == gold.strip().lower() for gold in answers))
