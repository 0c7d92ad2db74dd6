"""Questions per second of ``eval --benchmark textvqa_val`` generation against a loop written like the original
``eval_mm/evaluate_vqa.py``, on the same checkpoint and questions, in the same process.

    PYTHONPATH=src python benchmarks/eval_speed.py [--questions 48] [--batch-sizes 1 8] [--model DIR] [--repeat 2]

Writes ``--questions`` textvqa-style questions (the eval_mm JSON Lines layout, questions of different lengths, a
few small PNG pictures) and, without ``--model``, a tiny random checkpoint (``make_tiny``). For each batch size:

- ``ours``: :func:`qwenvl_train.eval_mm.runner.generate_predictions` (questions read by ``read_questions``);
- ``original``: the original's loop: a ``DataLoader`` (``InferenceSampler`` order, ``drop_last=False``) whose
  collate tokenizes the prompts padded on the left, then per batch the pictures are loaded (the original's model
  opened them inside ``forward``) and ``model.generate`` is called with the original's keyword arguments
  (``output_hidden_states=True`` and all), the new tokens decoded with ``skip_special_tokens`` and stripped.

Each path runs ``--repeat`` times, alternating, after one warm-up batch; the best time counts. Both must give the
same answers (checked). Goal (issue #26): ours at least as fast at batch 8. The load average is printed: on a busy
machine the figures mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

WORDS = "what colour is the big sign on the left side of the street near the old red house today".split()


def write_questions(folder: Path, n: int) -> Path:
    """``n`` eval_mm textvqa lines (question lengths 2 to 16 words), pictures relative to ``folder``."""
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (64 + 16 * i, 48), (40 * i, 200 - 40 * i, 90)).save(folder / f"img{i}.png")
    rows = [
        {
            "image": f"img{i % 4}.png",
            "question": " ".join(WORDS[(i * 3) % 5 : (i * 3) % 5 + 2 + (i * 7) % 15]).capitalize() + "?",
            "question_id": i,
            "answer": "x",
        }
        for i in range(n)
    ]
    path = folder / "textvqa_val.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ours(model: Any, tokenizer: Any, data: Path, batch_size: int) -> list[str]:
    from qwenvl_train.eval_mm.catalog import get_benchmark
    from qwenvl_train.eval_mm.questions import read_questions
    from qwenvl_train.eval_mm.runner import generate_predictions

    bench = get_benchmark("textvqa_val")
    questions, _ = read_questions(bench, data, data.parent)
    records, _ = generate_predictions(model, tokenizer, bench, questions, batch_size=batch_size)
    return [r["answer"] for r in records]


class _VQADataset(torch.utils.data.Dataset):
    """``evaluate_vqa.py``'s ``VQADataset``: one JSON line read per item, the prompt formatted there."""

    def __init__(self, test: Path, prompt: str) -> None:
        self.test = test.read_text().splitlines()
        self.prompt = prompt

    def __len__(self) -> int:
        return len(self.test)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        data = json.loads(self.test[idx].strip())
        return {
            "question": self.prompt.format(data["image"], data["question"]),
            "question_id": data["question_id"],
            "image": data["image"],
        }


def _collate(batches: list[dict[str, Any]], tokenizer: Any, n_queries: int) -> tuple:
    """``collate_fn``: ``tokenizer(questions, padding='longest')`` with left padding and pad = eod, here through
    the original tokenization of the prompt string (image spans as the model's placeholders)."""
    from qwenvl_train.eval_mm.generation import prompt_ids
    from qwenvl_train.inference.generation import left_pad

    rows = [prompt_ids(tokenizer, b["question"], n_queries) for b in batches]
    input_ids, attention_mask = left_pad(rows, tokenizer.eod_id)
    return [b["question_id"] for b in batches], input_ids, attention_mask, [b["image"] for b in batches]


def original(model: Any, tokenizer: Any, data: Path, batch_size: int) -> list[str]:
    from qwenvl_train.inference.generation import load_pixels

    dataset = _VQADataset(data, "<img>{}</img>{} Answer:")
    loader = torch.utils.data.DataLoader(
        dataset,
        sampler=range(len(dataset)),  # InferenceSampler on one rank: every index in order
        batch_size=batch_size,
        num_workers=0,
        drop_last=False,
        collate_fn=partial(_collate, tokenizer=tokenizer, n_queries=model.config.n_queries),
    )
    answers = []
    for _, input_ids, attention_mask, images in loader:
        pixel_values = load_pixels([str(data.parent / i) for i in images], model.config.image_size)
        pred = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            do_sample=False,
            num_beams=1,
            max_new_tokens=10,
            min_new_tokens=1,
            length_penalty=1,
            num_return_sequences=1,
            output_hidden_states=True,
            use_cache=True,
            pad_token_id=tokenizer.eod_id,
            eos_token_id=tokenizer.eod_id,
            top_p=1.0,  # neutral (the checkpoint's sampling values would only be warned about)
            top_k=50,
        )
        answers += [
            tokenizer.decode(row[input_ids.size(1) :].tolist(), skip_special_tokens=True).strip()
            for row in pred
        ]
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--model", help="checkpoint folder (default: a tiny random one)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir = Path(args.model) if args.model else None
        if model_dir is None:
            from qwenvl_train.tiny import make_tiny

            model_dir = make_tiny(folder / "model", seed=0)
        data = write_questions(folder, args.questions)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        warm = folder / "warm.jsonl"
        warm.write_text("".join(data.read_text().splitlines(keepends=True)[:2]))
        ours(model, tokenizer, warm, 2)
        original(model, tokenizer, warm, 2)

        print(f"{'path':<10}{'batch':>6}{'questions':>10}{'seconds':>9}{'q/s':>8}{'ratio':>7}")
        print("-" * 50)
        for batch_size in args.batch_sizes:
            best: dict[str, float] = {}
            answers: dict[str, list[str]] = {}
            for _ in range(args.repeat):
                for name, fn in (("original", original), ("ours", ours)):
                    start = time.perf_counter()
                    answers[name] = fn(model, tokenizer, data, batch_size)
                    best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
            if answers["ours"] != answers["original"]:
                print(f"answers differ at batch {batch_size}", file=sys.stderr)
                return 1
            for name in ("original", "ours"):
                ratio = best["original"] / best[name]
                qps = args.questions / best[name]
                print(
                    f"{name:<10}{batch_size:>6}{args.questions:>10}{best[name]:>9.2f}{qps:>8.1f}{ratio:>7.2f}"
                )
        print(f"\nratio = original seconds / these seconds; load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
