"""``qwenvl-train eval --benchmark``: generate a benchmark's answers as the original scripts do, then score them.

    from qwenvl_train.eval_mm.runner import BenchmarkRun, run_benchmark
    result = run_benchmark(BenchmarkRun("textvqa_val", Path("textvqa_val.jsonl"), model="Qwen-VL",
                                        questions=Path("textvqa_val_questions.json"),
                                        annotations=Path("textvqa_val_annotations.json"),
                                        save_predictions=Path("preds.jsonl"), resume=True, out=Path("m.json")))

The recipe: read the questions (:mod:`.questions`; bad ones stop the run or, with ``on_error="skip"``, are left
out and counted), skip those already answered in ``save_predictions`` (``resume``), split the rest over the
torchrun ranks (:mod:`.sharding`), load the model, answer batch by batch (:func:`answer_batch`) while appending
each batch to the predictions file (:mod:`.prediction_log`), gather everything on rank 0 and score it there
(``eval_mm.scoring.score_benchmark``). With ``predictions`` given, nothing is generated: the file is scored.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, UserError
from .catalog import Benchmark, get_benchmark
from .prediction_log import (
    PredictionLog,
    PredictionLogError,
    is_stream,
    merge_parts,
    part_path,
    prediction_record,
    read_records,
    record_id,
    saved_records,
)
from .questions import OnError, Question, QuestionError, read_questions

ON_ERROR = ("stop", "skip")
SCORINGS = ("original", "official")


@dataclass
class BenchmarkRun:
    """Every option of ``qwenvl-train eval --benchmark``.

    Attributes:
        benchmark: a catalog name (``textvqa_val``...).
        data: the benchmark's eval_mm file (MME: the folder of task files).
        questions: the official VQA questions JSON (VQA-score family).
        annotations: the official annotations JSON (VQA-score family, DocVQA's ``val_v1.0.json``).
        image_root: relative picture paths resolve against it (default: the current directory).
        predictions: score this file instead of generating.
        model: the model folder (or an adapter folder) to generate with.
        adapter: a LoRA adapter folder on ``model``.
        save_predictions: append each answer here as it comes (JSON Lines).
        resume: skip the questions already answered in ``save_predictions``.
        out: write the metrics JSON here (rank 0).
        batch_size: questions per batch.
        scoring: ``original`` (the original scripts' numbers) or ``official``.
        on_error: a bad question stops the run (``stop``) or is left out and counted (``skip``).
        device: torch device (default: this rank's GPU when there is one, else the CPU).
        dtype: weights dtype (``auto``, ``bf16``, ``fp16``, ``fp32``).
        progress: show a progress bar on rank 0.
    """

    benchmark: str
    data: Path
    questions: Path | None = None
    annotations: Path | None = None
    image_root: Path | None = None
    predictions: Path | None = None
    model: str | None = None
    adapter: str | None = None
    save_predictions: Path | None = None
    resume: bool = False
    out: Path | None = None
    batch_size: int = 8
    scoring: str = "original"
    on_error: str = "stop"
    device: str | None = None
    dtype: str = "auto"
    progress: bool = True

    def check(self) -> None:
        """Refuse a combination of options that cannot run.

        Raises:
            ConfigurationError: one line saying which options conflict.
        """
        if (self.predictions is None) == (self.model is None and self.adapter is None):
            raise ConfigurationError("pass either --predictions FILE or --model DIR (not both)")
        if self.predictions is not None and (self.save_predictions or self.resume):
            raise ConfigurationError("--save-predictions and --resume go with --model, not --predictions")
        if self.resume and self.save_predictions is None:
            raise ConfigurationError("--resume needs --save-predictions FILE (the answers to resume from)")
        if self.batch_size < 1:
            raise ConfigurationError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.on_error not in ON_ERROR:
            raise ConfigurationError(
                f"--on-error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}"
            )
        if self.scoring not in SCORINGS:
            raise ConfigurationError(f"--scoring must be one of {', '.join(SCORINGS)}, got {self.scoring!r}")


# One batch ------------------------------------------------------------------------------------------------------


def _pixels(question: Question, image_size: int) -> Any:
    from ..data.errors import ImageError
    from ..data.images import image_tensor

    try:
        return [image_tensor(ref, image_size) for ref in question.images]
    except ImageError as exc:
        raise question.error(str(exc)) from None


def answer_batch(
    model: Any,
    tokenizer: Any,
    bench: Benchmark,
    batch: Sequence[Question],
    pixels: list[Any],
    synced_gpus: bool | None = None,
) -> list[str]:
    """The answers to ``batch`` (each question's pictures already loaded in ``pixels``): generated text, the chosen
    option letter (``choice``), or ``model.chat``'s response (``mme``). ``synced_gpus``: see
    :func:`.generation.generate_texts`."""
    import torch

    from .choice import choose, option_losses, option_targets
    from .generation import chat_texts, generate_texts, prompt_ids

    flat = [p for per_question in pixels for p in per_question]
    pixel_values = torch.stack(flat) if flat else None
    if bench.family == "mme":
        return chat_texts(model, tokenizer, [q.prompt for q in batch], pixel_values, synced_gpus)
    n_queries = model.config.n_queries
    prompts = [prompt_ids(tokenizer, q.prompt, n_queries) for q in batch]
    if bench.family == "choice":
        targets = [option_targets(tokenizer, q.options) for q in batch]
        losses = option_losses(model, prompts, targets, pixel_values, [len(q.images) for q in batch])
        return [q.options[choose(row)] for q, row in zip(batch, losses, strict=True)]
    return generate_texts(model, tokenizer, bench, prompts, pixel_values, synced_gpus=synced_gpus)


def _check_prompt(question: Question, tokenizer: Any) -> None:
    from ..format.markup import PromptError
    from .generation import prompt_ids

    try:
        prompt_ids(tokenizer, question.prompt, 1)
    except PromptError as exc:
        raise question.error(str(exc)) from None


def generate_predictions(
    model: Any,
    tokenizer: Any,
    bench: Benchmark,
    questions: Sequence[Question],
    *,
    batch_size: int = 8,
    log: PredictionLog | None = None,
    on_error: OnError = "stop",
    progress: bool = False,
    done: int = 0,
    total: int | None = None,
    synced_gpus: bool | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Answer ``questions`` in batches, in order; returns the predictions and one line per question left out.

    Each batch's predictions are appended to ``log`` (when given) as soon as they exist.

    Args:
        model: a ``QwenVLForCausalLM`` in eval mode (adapters may be injected).
        tokenizer: its tokenizer.
        bench: the catalog entry.
        questions: what to ask.
        batch_size: questions per batch.
        log: where to append the predictions.
        on_error: a question whose picture or prompt fails stops the run (``stop``) or is left out (``skip``).
        progress: show a progress bar (stderr) with questions/s and the time left.
        done, total: questions already answered and in all, for the progress bar (default 0 and ``len``).
        synced_gpus: see :func:`.generation.generate_texts` (evaluation during a ZeRO-3/FSDP training run).

    Raises:
        QuestionError: with ``on_error="stop"``, the first question that cannot be asked.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    image_size = model.config.image_size
    total = len(questions) + done if total is None else total
    chunks = [questions[start : start + batch_size] for start in range(0, len(questions), batch_size)]
    bar = tqdm(
        total=total, initial=done, unit="question", desc=bench.name, disable=not progress, file=sys.stderr
    )
    # The next batch's pictures load in a thread while the model answers this one.
    with bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-pictures") as pool:
        pending = [pool.submit(_prepare, chunk, tokenizer, image_size, on_error) for chunk in chunks[:1]]
        for i, chunk in enumerate(chunks):
            batch, pixels, left_out = pending.pop().result()
            if i + 1 < len(chunks):
                pending.append(pool.submit(_prepare, chunks[i + 1], tokenizer, image_size, on_error))
            skipped += left_out
            if batch:
                answers = answer_batch(model, tokenizer, bench, batch, pixels, synced_gpus)
                new = [
                    prediction_record(bench, q.id, answer, q.fields)
                    for q, answer in zip(batch, answers, strict=True)
                ]
                if log is not None:
                    log.write(new)
                records += new
            bar.update(len(chunk))
    return records, skipped


def _prepare(
    chunk: Sequence[Question], tokenizer: Any, image_size: int, on_error: OnError
) -> tuple[list[Question], list[Any], list[str]]:
    """The questions of ``chunk`` that can be asked, their pictures loaded, and one line per question left out.

    Raises:
        QuestionError: with ``on_error="stop"``, the first question that cannot be asked.
    """
    batch: list[Question] = []
    pixels: list[Any] = []
    skipped: list[str] = []
    for question in chunk:
        try:
            _check_prompt(question, tokenizer)
            pixels.append(_pixels(question, image_size))
        except QuestionError as exc:
            if on_error != "skip":
                raise
            skipped.append(str(exc))
            continue
        batch.append(question)
    return batch, pixels, skipped


# The whole run --------------------------------------------------------------------------------------------------


def _score(run: BenchmarkRun, bench: Benchmark, predictions: Path | list[dict[str, Any]]) -> dict[str, Any]:
    from .scoring import score_benchmark

    return score_benchmark(
        bench.name,
        run.data,
        predictions,
        questions=run.questions,
        annotations=run.annotations,
        scoring=run.scoring,
    )


def _write_out(out: Path, result: dict[str, Any]) -> None:
    import json

    from ..outputs import write_output

    out.parent.mkdir(parents=True, exist_ok=True)
    write_output(out, json.dumps(result, indent=1, ensure_ascii=False) + "\n", "--out")


def _resumed_ids(run: BenchmarkRun, bench: Benchmark) -> set[str]:
    path = run.save_predictions
    if path is None:
        return set()
    if is_stream(path):  # written through as the answers come; nothing to read back
        if run.resume:
            raise PredictionLogError(
                f"--save-predictions {path}: --resume reads the saved answers back, a stream cannot be: give a file"
            )
        return set()
    records = saved_records(path)
    if records and not run.resume:
        raise PredictionLogError(
            f"--save-predictions {path}: already holds {len(records)} prediction(s); pass --resume to go on from "
            "them, or name another file"
        )
    return {rid for rid in (record_id(bench, r) for r in records) if rid is not None}


def run_benchmark(run: BenchmarkRun) -> dict[str, Any]:
    """Generate the benchmark's answers (unless ``run.predictions`` is given) and score them.

    Under torchrun every rank calls it; rank 0 scores, writes ``run.out`` and returns the result, the other ranks
    return ``{}``.

    Returns:
        What ``score_benchmark`` returns (``benchmark``, ``num_questions``, ``num_missing``, ``metrics``...), plus
        ``num_skipped`` and ``skipped`` (one line per question left out).

    Raises:
        ConfigurationError: options that do not go together.
        QuestionError: a bad question (``on_error="stop"``).
        UserError: the model, the pictures or the predictions file cannot be used.
    """
    run.check()
    bench = get_benchmark(run.benchmark)
    if run.predictions is not None:
        if not Path(run.predictions).is_file():
            raise UserError(f"--predictions {run.predictions}: no such file")
        result = _score(run, bench, Path(run.predictions))
        if run.out is not None and int(os.environ.get("RANK", "0")) == 0:
            _write_out(run.out, result)
        return result

    from ..inference.loading import load_for_inference
    from .sharding import barrier, close_distributed, gather_to_all, init_distributed, local_device, shard

    device = run.device or local_device()
    rank, world_size = init_distributed(device)
    questions, skipped = read_questions(bench, run.data, run.image_root, run.on_error)  # type: ignore[arg-type]
    done = _resumed_ids(run, bench)
    barrier(world_size)  # every rank has read what was saved before any rank appends
    remaining = [q for q in questions if str(q.id) not in done]
    mine = [remaining[i] for i in shard(len(remaining), world_size, rank)]
    model, tokenizer = load_for_inference(run.model, run.adapter, run.dtype, device)
    log = None
    streamed = run.save_predictions is not None and is_stream(run.save_predictions)
    if streamed and world_size > 1:
        raise PredictionLogError(
            f"--save-predictions {run.save_predictions}: under torchrun each rank writes a part file beside it; "
            "give a file"
        )
    if run.save_predictions is not None:
        log = PredictionLog(
            run.save_predictions if world_size == 1 else part_path(run.save_predictions, rank)
        )
    try:
        records, left_out = generate_predictions(
            model,
            tokenizer,
            bench,
            mine,
            batch_size=run.batch_size,
            log=log,
            on_error=run.on_error,  # type: ignore[arg-type]
            progress=run.progress and rank == 0,
            # One process shows the whole run; under torchrun rank 0 shows its own shard.
            done=len(questions) - len(remaining) if world_size == 1 else 0,
            total=len(questions) if world_size == 1 else len(mine),
        )
    finally:
        if log is not None:
            log.close()
    gathered = gather_to_all((records, left_out), world_size)
    result: dict[str, Any] = {}
    if rank == 0:
        order = {str(q.id): q.index for q in questions}
        if run.save_predictions is not None and not streamed:
            merge_parts(run.save_predictions, bench, order)
            predictions = read_records(run.save_predictions)
        else:
            predictions = [r for rank_records, _ in gathered for r in rank_records]
        predictions.sort(key=lambda r: order.get(record_id(bench, r) or "", len(order)))
        skipped += [line for _, rank_skipped in gathered for line in rank_skipped]
        result = _score(run, bench, predictions)
        result["num_predictions"] = len(predictions)
        result["num_skipped"] = len(skipped)
        result["skipped"] = skipped
        if run.out is not None:
            _write_out(run.out, result)
    barrier(world_size)
    close_distributed()
    return result
