"""Turning per-question scores into the 0-100 figures the scorer reports."""

from __future__ import annotations

from collections.abc import Sequence


def percent(scores: Sequence[float]) -> float:
    """``100 * mean(scores)`` (0.0 for no scores), summed left to right as the original scripts sum."""
    if not scores:
        return 0.0
    return 100.0 * float(sum(scores)) / len(scores)


def grouped_percent(scores: Sequence[float], labels: Sequence[str | None]) -> dict[str, float]:
    """:func:`percent` of the scores of each label (questions labelled None are left out), labels in first-seen
    order."""
    groups: dict[str, list[float]] = {}
    for score, label in zip(scores, labels, strict=True):
        if label is not None:
            groups.setdefault(label, []).append(score)
    return {label: percent(values) for label, values in groups.items()}
