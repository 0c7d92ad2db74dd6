"""Step ``eval``: questions/s of ``eval --benchmark textvqa_val`` generation on the big model (the full Qwen-VL-Chat
shape in bf16 on a GPU), at each batch size of ``plan.eval_batches``, on ``plan.eval_questions`` generated
questions and pictures (``benchmarks/eval_speed.py``'s ``write_questions``: the eval_mm JSON Lines layout,
questions of 2 to 16 words, small PNG pictures).

The path is the command's own: the model and tokenizer loaded by ``load_for_inference``, the questions read by
``eval_mm.questions.read_questions`` and answered by ``eval_mm.runner.generate_predictions`` (the original prompt,
greedy, left padding, at most 10 new tokens, the next batch's pictures loaded in a thread), after one warm-up
batch. The time is the whole call: pictures, prompts, generation and decoding. Each row after batch 1 says how
many of its answers equal batch 1's (left padding must not change them; on random weights in bf16 a near tie can
flip, so this is reported, not failed)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from kit_common import Part, Plan, device, elapsed, model_dir


def run(part: Part, work: Path, plan: Plan) -> None:
    from eval_speed import write_questions

    from qwenvl_train.eval_mm import questions as benchmark_questions
    from qwenvl_train.eval_mm import runner
    from qwenvl_train.eval_mm.catalog import get_benchmark
    from qwenvl_train.inference.loading import load_for_inference

    dev = device()
    dtype = "bf16" if dev.type == "cuda" else "fp32"
    folder = work / "eval-data"
    folder.mkdir(parents=True, exist_ok=True)
    data = write_questions(folder, plan.eval_questions)
    bench = get_benchmark("textvqa_val")
    questions, skipped = benchmark_questions.read_questions(bench, data, folder)
    if skipped:
        raise RuntimeError(f"{len(skipped)} generated question(s) could not be read: {skipped[0]}")
    start = time.perf_counter()
    model, tokenizer = load_for_inference(str(model_dir(work, "big")), None, dtype, str(dev))
    part["model"] = {"size": plan.big, "dtype": dtype, "load_seconds": elapsed(start)}
    part["settings"] = {
        "benchmark": bench.name,
        "questions": len(questions),
        "max_new_tokens": bench.max_new_tokens,
        "min_new_tokens": bench.min_new_tokens,
    }
    first: list[str] | None = None
    for batch in plan.eval_batches:
        with torch.no_grad():
            runner.generate_predictions(
                model, tokenizer, bench, questions[:batch], batch_size=batch
            )  # warm-up
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            records, _ = runner.generate_predictions(model, tokenizer, bench, questions, batch_size=batch)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        answers = [str(r["answer"]) for r in records]
        first = answers if first is None else first
        part.row(
            batch=batch,
            questions=len(answers),
            seconds=round(seconds, 3),
            questions_s=round(len(answers) / seconds, 2),
            same_as_first=sum(a == b for a, b in zip(answers, first, strict=True)),
            empty_answers=sum(not a for a in answers),
        )
