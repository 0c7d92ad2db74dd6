"""ANLS as ``infographicsvqa_eval.py`` (the DocVQA / InfographicVQA challenge script) computes it.

For each gold answer: the edit distance between the two *normalised* strings (stripped, lower-cased, runs of
whitespace made one space), divided by the longer of the two *raw* strings' lengths (``len(s.upper())``: the
script measures the upper-cased raw text, so ``"ß"`` counts 2); the question scores ``1 - min`` over the gold
answers, and a score below the threshold (0.5) becomes 0. The script is the challenge's own, so ``original``
and ``official`` agree.
"""

from __future__ import annotations

from collections.abc import Sequence

ANLS_THRESHOLD = 0.5


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each 1) between ``a`` and ``b``."""
    if len(a) > len(b):
        a, b = b, a
    previous = list(range(len(a) + 1))
    for j, cb in enumerate(b, 1):
        current = [j]
        for i, ca in enumerate(a, 1):
            current.append(min(previous[i] + 1, current[i - 1] + 1, previous[i - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls_score(prediction: str, answers: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """One question's ANLS in [0, 1] (0 when no gold answer is given)."""
    if not answers:
        return 0.0
    predicted = _normalise(prediction)
    distances = []
    for answer in answers:
        length = max(len(answer.upper()), len(prediction.upper()))
        distances.append(0.0 if length == 0 else levenshtein(_normalise(answer), predicted) / length)
    score = 1.0 - min(distances)
    return 0.0 if score < threshold else score
