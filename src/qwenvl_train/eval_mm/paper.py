"""The figures Qwen-VL's authors published, the reference columns of ``eval --compare``.

Sources, all in the QwenLM/Qwen-VL repository at commit ``aa00ed04091eea5fcdd32985e7915f1c53e7d599``:

- ``README.md``, "Zero-shot Captioning & General VQA", "Text-oriented VQA" and "Referring Expression
  Comprehension" tables (the text-oriented table lists Qwen-VL only);
- ``eval_mm/mme/EVAL_MME.md`` (Qwen-VL-Chat: perception 1487.576330532213, cognition 360.71428571428567);
- ``eval_mm/seed_bench/leaderboard.jpg`` (SEED-Bench "Avg. Img": Qwen-VL 62.3, Qwen-VL-Chat 65.4).

Some published splits are not the ones scored locally (VQAv2 test-dev against our ``vqav2_val``, DocVQA test
against ``docvqa_val``, one ChartQA figure for both test splits): :attr:`PaperFigure.note` says so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperFigure:
    """One published figure pair.

    Attributes:
        qwen_vl: Qwen-VL's figure (None where not published).
        qwen_vl_chat: Qwen-VL-Chat's figure (None where not published).
        note: how the published split differs from the local one ("" when it is the same).
    """

    qwen_vl: float | None
    qwen_vl_chat: float | None
    note: str = ""


_REFCOCO = {
    "refcoco_val": (89.36, 88.55),
    "refcoco_testA": (92.26, 92.27),
    "refcoco_testB": (85.34, 84.51),
    "refcoco+_val": (83.12, 82.82),
    "refcoco+_testA": (88.25, 88.59),
    "refcoco+_testB": (77.21, 76.79),
    "refcocog_val": (85.58, 85.96),
    "refcocog_test": (85.48, 86.32),
}

#: ``(benchmark, metric key) -> PaperFigure``.
PAPER_FIGURES: dict[tuple[str, str], PaperFigure] = {
    ("nocaps", "CIDEr"): PaperFigure(121.4, 120.2),
    ("flickr", "CIDEr"): PaperFigure(85.8, 81.0),
    ("vqav2_val", "vqa_accuracy"): PaperFigure(78.8, 78.2, "published on VQAv2 test-dev"),
    ("okvqa_val", "vqa_accuracy"): PaperFigure(58.6, 56.6),
    ("gqa_testdev", "accuracy"): PaperFigure(59.3, 57.5),
    ("scienceqa_test_img", "accuracy"): PaperFigure(67.1, 68.2),
    ("vizwiz_val", "vqa_accuracy"): PaperFigure(35.2, 38.9, "published as VizWiz (0-shot)"),
    ("textvqa_val", "vqa_accuracy"): PaperFigure(63.8, None),
    ("docvqa_val", "anls"): PaperFigure(65.1, None, "published on DocVQA test"),
    ("chartqa_test_human", "relaxed_accuracy"): PaperFigure(
        65.7, None, "one published figure for ChartQA test"
    ),
    ("chartqa_test_augmented", "relaxed_accuracy"): PaperFigure(
        65.7, None, "one published figure for ChartQA test"
    ),
    ("ai2diagram_test", "accuracy"): PaperFigure(62.3, None),
    ("ocrvqa_test", "accuracy"): PaperFigure(75.7, None),
    ("seed_bench_image", "accuracy"): PaperFigure(62.3, 65.4),
    ("mme", "perception"): PaperFigure(None, 1487.576330532213),
    ("mme", "cognition"): PaperFigure(None, 360.71428571428567),
    **{(name, "precision@1"): PaperFigure(base, chat) for name, (base, chat) in _REFCOCO.items()},
}


def paper_figure(benchmark: str, key: str) -> PaperFigure | None:
    """The published figures of ``benchmark``'s metric ``key``, or None."""
    return PAPER_FIGURES.get((benchmark, key))
