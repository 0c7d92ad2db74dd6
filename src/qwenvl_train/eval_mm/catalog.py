"""The benchmarks of the original ``eval_mm/`` scripts: one entry per dataset name, as those scripts name them.

Each entry says how the original asks (the prompt template, verbatim, and its generation lengths), how it
scores (the family of metric code and the key it reports) and how its result files name a question. Generation
(``eval_mm`` generation modules) and scoring (``eval_mm.metrics`` and the scorer) both read this one table, so
a benchmark is added in one place.

Families:
    ``vqa``: the VQA score of ``vqa_eval.py`` over the official questions/annotations JSON (VQAv2, OK-VQA,
        TextVQA, VizWiz).
    ``anls``: ``infographicsvqa_eval.py`` against DocVQA's ``val_v1.0.json``.
    ``relaxed``: ChartQA's relaxed accuracy as ``evaluate_vqa.py`` calls it.
    ``gqa``: GQA's answer clean-up, then exact match.
    ``exact``: exact match after strip + lower (OCR-VQA, AI2D).
    ``choice``: the option letter whose tokens have the lowest loss after the prompt (ScienceQA, SEED image).
    ``grounding``: the first box of the answer against the reference box, IoU >= 0.5 (RefCOCO family).
    ``caption``: CIDEr through pycocoevalcap (Flickr30k, NoCaps).
    ``mme``: ``model.chat`` with the chat model's settings, scored as MME's ``calculation.py`` (acc + acc+).
    ``server``: predictions for an official evaluation server; nothing is scored locally.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

#: ``evaluate_vqa.py``'s prompt: the picture, the question, `` Answer:``; the model continues after it.
VQA_PROMPT = "<img>{}</img>{} Answer:"
#: ``evaluate_grounding.py``: the expression as a reference, then an open box for the model to fill.
GROUNDING_PROMPT = "<img>{}</img><ref>{}</ref><box>"
#: ``evaluate_caption.py``.
CAPTION_PROMPT = "<img>{}</img>Describe the image in English:"
#: ``evaluate_multiple_choice.py`` (ScienceQA): hint (or ``N/A``), question, the lettered options.
SCIENCEQA_PROMPT = "<img>{}</img>Context: {}\nQuestion: {}\nOptions: {}\nAnswer:"
#: ``seed_bench/eval.py`` reads its prompt ready-made from the data line's ``prompt`` field.
SEED_PROMPT = "{}"
#: ``mme/eval.py``: the picture, a newline, the question; asked through ``model.chat``.
MME_QUERY = "<img>{}</img>\n{}"


class UnknownBenchmarkError(UserError, ValueError):
    """A benchmark name that is not in the catalog; one line listing the known names."""


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of the original ``eval_mm/`` scripts.

    Attributes:
        name: the dataset name the original scripts use (``textvqa_val``).
        family: how it is asked and scored (see the module docstring).
        metric: the key of its headline metric in the ``--out`` JSON; ``None`` for server-only splits.
        prompt: the original prompt template, verbatim (``str.format`` placeholders).
        max_new_tokens: the original's ``max_new_tokens`` (0 where nothing is generated).
        min_new_tokens: the original's ``min_new_tokens`` (0 where nothing is generated).
        strip: whether the original strips the decoded answer (grounding does not).
        id_key: the key the original's result file names a question by; ``""`` means by position
            (ChartQA, RefCOCO, ScienceQA: the 0-based line of ``--data``).
    """

    name: str
    family: str
    metric: str | None
    prompt: str
    max_new_tokens: int
    min_new_tokens: int
    strip: bool = True
    id_key: str = "question_id"


def _vqa(name: str, family: str, metric: str | None, max_new: int, id_key: str) -> Benchmark:
    return Benchmark(name, family, metric, VQA_PROMPT, max_new, 1, True, id_key)


def _grounding(name: str) -> Benchmark:
    return Benchmark(name, "grounding", "precision@1", GROUNDING_PROMPT, 28, 10, False, "")


_ENTRIES: tuple[Benchmark, ...] = (
    _vqa("vqav2_val", "vqa", "vqa_accuracy", 10, "question_id"),
    _vqa("vqav2_testdev", "server", None, 10, "question_id"),
    _vqa("okvqa_val", "vqa", "vqa_accuracy", 10, "question_id"),
    _vqa("textvqa_val", "vqa", "vqa_accuracy", 10, "question_id"),
    _vqa("vizwiz_val", "vqa", "vqa_accuracy", 10, "question_id"),
    _vqa("vizwiz_test", "server", None, 10, "image"),
    _vqa("docvqa_val", "anls", "anls", 100, "questionId"),
    _vqa("docvqa_test", "server", None, 100, "questionId"),
    _vqa("chartqa_test_human", "relaxed", "relaxed_accuracy", 100, ""),
    _vqa("chartqa_test_augmented", "relaxed", "relaxed_accuracy", 100, ""),
    _vqa("gqa_testdev", "gqa", "accuracy", 10, "questionId"),
    _vqa("ocrvqa_val", "exact", "accuracy", 100, "questionId"),
    _vqa("ocrvqa_test", "exact", "accuracy", 100, "questionId"),
    _vqa("ai2diagram_test", "exact", "accuracy", 10, "image"),
    Benchmark("scienceqa_test_img", "choice", "accuracy", SCIENCEQA_PROMPT, 0, 0, True, ""),
    Benchmark("seed_bench_image", "choice", "accuracy", SEED_PROMPT, 0, 0, True, "question_id"),
    *(
        _grounding(f"{base}_{split}")
        for base, splits in (
            ("refcoco", ("val", "testA", "testB")),
            ("refcoco+", ("val", "testA", "testB")),
            ("refcocog", ("val", "test")),
        )
        for split in splits
    ),
    Benchmark("flickr", "caption", "CIDEr", CAPTION_PROMPT, 30, 8, True, "image_id"),
    Benchmark("nocaps", "caption", "CIDEr", CAPTION_PROMPT, 30, 8, True, "image_id"),
    Benchmark("mme", "mme", "perception", MME_QUERY, 0, 0, True, ""),
)

#: Every benchmark by name, in the order the issue and the original list them.
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in _ENTRIES}

#: Names refused with a reason rather than "unknown": Qwen-VL takes pictures, not video.
REFUSED: dict[str, str] = {
    "seed_bench_video": "SEED-Bench's video dimensions (10-12) are out: Qwen-VL takes pictures, not video",
    "seed_bench": "use seed_bench_image: SEED-Bench's video dimensions are out (Qwen-VL takes pictures)",
}


def get_benchmark(name: str) -> Benchmark:
    """The catalog entry for ``name``.

    Raises:
        UnknownBenchmarkError: ``name`` is not a known benchmark (one line with the known names, or why a
            name such as SEED video is out).
    """
    if name in BENCHMARKS:
        return BENCHMARKS[name]
    if name in REFUSED:
        raise UnknownBenchmarkError(f"benchmark {name!r}: {REFUSED[name]}")
    raise UnknownBenchmarkError(f"unknown benchmark {name!r}; known: {' '.join(BENCHMARKS)}")
