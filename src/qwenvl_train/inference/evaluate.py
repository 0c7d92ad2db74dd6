"""Evaluate a model on a conversations file: generate each sample's last answer and score it.

    samples, errors = read_eval_samples(["data/test.json"])
    results, skipped = evaluate_samples(model, tokenizer, samples, generation_config, batch_size=8)
    print(format_table(summarize([r.score for r in results])))

A sample is the training format (read by the data pipeline's reader). Its turns must alternate user/assistant
from a user turn and end with the assistant answer to score; everything before that answer is the prompt, built
exactly as ``model.chat`` builds it (:func:`qwenvl_train.format.render.make_context`; the sample's system turn, else the default), with images
resolved against the data file's folder and loaded by the training loader. Prompts are generated in batches,
left-padded (:mod:`.generation`), shortest first so that a batch holds similar lengths; results keep the file
order. Scoring is :mod:`.metrics`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..data.engine.records import read_samples
from ..data.errors import ImageError
from ..data.images import check_image_header, resolve_image
from ..errors import UserError
from ..format import rules
from ..format import tokens as st
from ..format.markup import PromptError
from ..format.render import DEFAULT_MAX_WINDOW_SIZE, make_context
from ..format.sample import Sample
from .generation import decode_answer, generate, load_pixels
from .metrics import IOU_THRESHOLD, AnswerScore, reference_groundings, score_answer

OnError = Literal["raise", "skip"]


class EvalDataError(UserError, ValueError):
    """A sample cannot be evaluated; the message is one line naming file, sample and turn."""


@dataclass
class EvalSample:
    """A conversation split into what the model sees and the answer it must give.

    Attributes:
        id: the sample id (or ``#N``).
        file: the data file; relative image paths are resolved against its folder.
        query: the last user turn.
        history: the ``(query, response)`` pairs before it.
        system: the sample's system prompt, or None for the default.
        reference: the assistant answer to score.
    """

    id: str
    file: str
    query: str
    history: list[tuple[str, str]]
    system: str | None
    reference: str

    def error(self, reason: str) -> EvalDataError:
        """An :class:`EvalDataError` about this sample."""
        return EvalDataError(f"{self.file}: sample {self.id!r}: {reason}")


@dataclass
class EvalResult:
    """One evaluated sample."""

    sample: EvalSample
    prediction: str
    score: AnswerScore

    def to_dict(self) -> dict[str, Any]:
        """What ``--out`` writes per sample."""
        return {
            "id": self.sample.id,
            "file": self.sample.file,
            "query": self.sample.query,
            "history_pairs": len(self.sample.history),
            "reference": self.sample.reference,
            "prediction": self.prediction,
            **self.score.to_dict(),
        }


def eval_sample(raw: Sample) -> EvalSample:
    """Split a sample into prompt and reference answer.

    Raises:
        EvalDataError: the turns do not alternate user/assistant from a user turn, the last turn is not an
            assistant answer, or the answer holds a malformed box.
    """
    turns = raw.turns
    misplaced = rules.first_misplaced(turns)
    if misplaced is not None:
        position, turn = misplaced
        expected = "a user" if rules.expected_role(position) == "user" else "an assistant"
        reason = f"{expected} turn was expected here (turns must alternate user/assistant)"
        raise EvalDataError(str(raw.error(reason, turn.index)))
    last = turns[-1]
    if not rules.ends_with_assistant(turns):
        raise EvalDataError(str(raw.error("the last turn must be the assistant answer to score", last.index)))
    try:
        reference_groundings(last.value)
    except ValueError as exc:
        raise EvalDataError(str(raw.error(str(exc), last.index))) from None
    pairs = [(turns[i].value, turns[i + 1].value) for i in range(0, len(turns) - 2, 2)]
    return EvalSample(raw.id, str(raw.file), turns[-2].value, pairs, raw.system, last.value)


def read_eval_samples(paths: str | Path | Iterable[str | Path]) -> tuple[list[EvalSample], list[str]]:
    """Read conversation files for evaluation: the samples, and one line per sample or file that cannot be used."""
    raw_samples, data_errors = read_samples(paths)
    errors = [str(e) for e in data_errors]
    samples: list[EvalSample] = []
    for raw in raw_samples:
        try:
            samples.append(eval_sample(raw))
        except EvalDataError as exc:
            errors.append(str(exc))
    return samples, errors


@dataclass
class _Prompt:
    ids: list[int]
    images: list[str]


def _prompt(sample: EvalSample, tokenizer: Any, config: Any, model_config: Any) -> _Prompt:
    """The sample's prompt, its images resolved and checked (header only: missing files fail here, early)."""
    system = st.DEFAULT_SYSTEM_PROMPT if sample.system is None else sample.system
    window = getattr(config, "max_window_size", None) or DEFAULT_MAX_WINDOW_SIZE
    base = Path(sample.file).parent
    try:
        context = make_context(
            tokenizer, sample.query, sample.history, system, window, model_config.n_queries
        )
        images = [resolve_image(ref, base) for ref in context.images]
        for image in images:
            check_image_header(image)
    except (PromptError, ImageError) as exc:
        raise sample.error(str(exc)) from None
    return _Prompt(context.input_ids, images)


def _pixels(sample: EvalSample, prompt: _Prompt, image_size: int) -> Any:
    try:
        return load_pixels(prompt.images, image_size)
    except ImageError as exc:
        raise sample.error(str(exc)) from None


def generate_answers(
    model: Any,
    tokenizer: Any,
    samples: Sequence[EvalSample],
    generation_config: Any,
    batch_size: int = 8,
    on_error: OnError = "raise",
    progress: bool = False,
    synced_gpus: bool | None = None,
) -> tuple[list[str | None], list[str]]:
    """The model's answer to every sample (None for a skipped one), and one line per skipped sample.

    Args:
        model: a ``QwenVLForCausalLM`` (in eval mode).
        tokenizer: its tokenizer.
        samples: what to answer.
        generation_config: from :func:`.generation.chat_generation_config`.
        batch_size: prompts per ``generate`` call.
        on_error: a sample whose prompt or image fails stops everything (``raise``) or is skipped.
        progress: show a progress bar (on stderr).
        synced_gpus: see :func:`.generation.generate` (distributed runs).

    Raises:
        EvalDataError: with ``on_error="raise"``, the first sample that fails.
    """
    from tqdm import tqdm

    model_config = model.config
    answers: list[str | None] = [None] * len(samples)
    skipped: list[str] = []
    prompts: dict[int, _Prompt] = {}
    for i, sample in enumerate(samples):
        try:
            prompts[i] = _prompt(sample, tokenizer, generation_config, model_config)
        except EvalDataError as exc:
            if on_error == "raise":
                raise
            skipped.append(str(exc))
    order = sorted(prompts, key=lambda i: len(prompts[i].ids))
    with tqdm(total=len(samples), unit="sample", desc="eval", disable=not progress, file=sys.stderr) as bar:
        bar.update(len(samples) - len(order))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            rows, pixels = [], []
            for i in batch:
                try:
                    sample_pixels = _pixels(samples[i], prompts[i], model_config.image_size)
                except EvalDataError as exc:
                    if on_error == "raise":
                        raise
                    skipped.append(str(exc))
                    continue
                rows.append(i)
                if sample_pixels is not None:
                    pixels.append(sample_pixels)
            if rows:
                pixel_values = torch.cat(pixels) if pixels else None
                prompt_ids = [prompts[i].ids for i in rows]
                ids = generate(model, prompt_ids, pixel_values, generation_config, None, synced_gpus)
                for i, row_ids in zip(rows, ids, strict=True):
                    answers[i] = decode_answer(tokenizer, row_ids)
            bar.update(len(batch))
    return answers, skipped


def evaluate_samples(
    model: Any,
    tokenizer: Any,
    samples: Sequence[EvalSample],
    generation_config: Any,
    batch_size: int = 8,
    on_error: OnError = "raise",
    progress: bool = False,
) -> tuple[list[EvalResult], list[str]]:
    """Generate and score every sample; returns the results (file order) and one line per skipped sample."""
    answers, skipped = generate_answers(
        model, tokenizer, samples, generation_config, batch_size, on_error, progress
    )
    results = [
        EvalResult(sample, answer, score_answer(answer, sample.reference))
        for sample, answer in zip(samples, answers, strict=True)
        if answer is not None
    ]
    return results, skipped


def format_table(metrics: dict[str, float | int]) -> str:
    """The summary printed at the end of ``qwenvl-train eval`` (from :func:`.metrics.summarize`, plus
    ``skipped``)."""
    lines = [
        f"evaluated {metrics['samples']} sample(s): {metrics['box_samples']} box answer(s), "
        f"{metrics['text_samples']} text answer(s); {metrics.get('skipped', 0)} skipped",
        f"{'metric':<14}{'value':>8}  over",
    ]
    acc = f"acc@{IOU_THRESHOLD:g}"
    if acc in metrics:
        lines.append(
            f"{'Acc@' + format(IOU_THRESHOLD, 'g'):<14}{metrics[acc]:>8.4f}  {metrics['boxes']} reference box(es)"
        )
        lines.append(f"{'mean IoU':<14}{metrics['mean_iou']:>8.4f}  {metrics['boxes']} reference box(es)")
    if "exact_match" in metrics:
        lines.append(
            f"{'exact match':<14}{metrics['exact_match']:>8.4f}  {metrics['text_samples']} text answer(s)"
        )
    if metrics.get("malformed_boxes"):
        lines.append(f"malformed boxes in the predictions (scored 0): {metrics['malformed_boxes']}")
    return "\n".join(lines)
