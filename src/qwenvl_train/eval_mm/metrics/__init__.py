"""The metric code of the original ``eval_mm/`` scripts, re-written in plain Python, one module per family.

Each function scores one question (in [0, 1]) or, for CIDEr and MME, the set the original scores together; the
scorer (:mod:`qwenvl_train.eval_mm.scoring`) reads gold and predictions and turns these into 0-100 figures
(:mod:`.aggregate`). ``scoring="original"`` reproduces the scripts' numbers, quirks included; ``"official"`` is
the benchmark's own definition where it differs (VQA human-answer normalisation, ChartQA tolerance relative to
the gold, grounding corners sorted). Each module's docstring lists its quirks.

- :mod:`.vqa`: :func:`vqa_score` (``vqa_eval.py``);
- :mod:`.anls`: :func:`anls_score` (``infographicsvqa_eval.py``);
- :mod:`.relaxed`: :func:`relaxed_score` (ChartQA, pix2struct's rule as ``evaluate_vqa.py`` calls it);
- :mod:`.exact`: :func:`exact_match_score`, :func:`gqa_clean_answer`;
- :mod:`.choice`: :func:`choice_score` (ScienceQA, SEED);
- :mod:`.grounding`: :func:`grounding_iou`, :func:`is_hit` (RefCOCO family);
- :mod:`.caption`: :func:`cider_scores` (pycocoevalcap);
- :mod:`.mme`: :func:`mme_task_scores`, :func:`parse_yes_no` (MME's ``calculation.py``).
"""

from __future__ import annotations

from .aggregate import grouped_percent, percent
from .anls import anls_score
from .caption import cider_scores
from .choice import choice_index, choice_score
from .exact import exact_match_score, gqa_clean_answer
from .grounding import grounding_iou, is_hit, parse_original_box
from .mme import COGNITION_TASKS, MME_TASKS, PERCEPTION_TASKS, mme_task_scores, parse_yes_no
from .relaxed import relaxed_correct, relaxed_score
from .vqa import normalize_answer, vqa_score

SCORINGS = ("original", "official")

__all__ = [
    "COGNITION_TASKS",
    "MME_TASKS",
    "PERCEPTION_TASKS",
    "SCORINGS",
    "anls_score",
    "choice_index",
    "choice_score",
    "cider_scores",
    "exact_match_score",
    "gqa_clean_answer",
    "grounding_iou",
    "grouped_percent",
    "is_hit",
    "mme_task_scores",
    "normalize_answer",
    "parse_original_box",
    "parse_yes_no",
    "percent",
    "relaxed_correct",
    "relaxed_score",
    "vqa_score",
]
