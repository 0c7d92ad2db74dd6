"""How full ``--packing`` micro-batches are: best fit within windows (what training does,
:func:`qwenvl_train.training.sampler.pack_best_fit`) against cutting the shuffled order as it comes.

    PYTHONPATH=src python benchmarks/packing_fill.py [--budgets 2048 4096 8192] [--samples 100000]
        [--data FILE ... --model DIR [--model_max_length N]]

Lengths: three seeded synthetic distributions of conversation lengths in tokens (a picture is 258 of them), or,
with ``--data``, the lengths the product's own scan gives the files (``ConversationDataset.from_model``; no
picture is opened). For each budget and distribution it prints the micro-batches an epoch makes, the fill (tokens
over micro-batches x budget) and the seconds to plan the epoch. Packed training computes about the same tokens
either way; emptier micro-batches mean more, smaller optimizer steps per epoch (the learning rate schedule and the
per-step overhead follow the count).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

IMAGE_TOKENS = 258  # <img> + 256 queries + </img>


def synthetic_lengths(n: int, seed: int = 0) -> dict[str, list[int]]:
    """Three seeded length distributions (tokens per conversation), clipped to [16, 2048]."""
    rng = np.random.default_rng(seed)
    captions = IMAGE_TOKENS + rng.integers(20, 120, n)  # one picture and a short answer
    chats = rng.lognormal(np.log(500), 0.7, n) + IMAGE_TOKENS * rng.integers(
        0, 3, n
    )  # long-tailed, 0-2 pictures
    mixed = np.where(rng.random(n) < 0.3, rng.integers(1200, 2048, n), rng.integers(16, 400, n))  # two modes
    return {
        "captions (1 picture)": np.clip(captions, 16, 2048).astype(int).tolist(),
        "chats (lognormal)": np.clip(chats, 16, 2048).astype(int).tolist(),
        "mixed (30% long)": np.clip(mixed, 16, 2048).astype(int).tolist(),
    }


def cut_in_order(order: Sequence[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """The baseline: consecutive samples of ``order`` until the next one would pass ``budget``."""
    packs: list[list[int]] = [[]]
    used = 0
    for index in order:
        if packs[-1] and used + lengths[index] > budget:
            packs.append([])
            used = 0
        packs[-1].append(index)
        used += lengths[index]
    return packs


def data_lengths(files: list[str], model: str, max_length: int) -> list[int]:
    """The token lengths the product's scan gives ``files`` (truncated to ``max_length`` as training would)."""
    from qwenvl_train.data.dataset import ConversationDataset
    from qwenvl_train.tokenizer import QwenVLTokenizer

    tokenizer = QwenVLTokenizer(vocab_file=f"{model}/qwen.tiktoken")
    dataset = ConversationDataset.from_model(files, tokenizer, model, model_max_length=max_length)
    return dataset.lengths.tolist()


def measure(lengths: list[int], budget: int, seed: int = 0) -> list[tuple[str, int, float, float]]:
    """(method, micro-batches, fill, seconds) for both packers over one shuffled epoch of ``lengths``."""
    import torch

    from qwenvl_train.training.sampler import pack_best_fit

    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    rows = []
    for name, packer in (("cut in order", cut_in_order), ("best fit (ours)", pack_best_fit)):
        start = time.perf_counter()
        packs = packer(order, lengths, budget)
        seconds = time.perf_counter() - start
        assert sorted(i for pack in packs for i in pack) == sorted(order), name
        assert all(sum(lengths[i] for i in pack) <= budget or len(pack) == 1 for pack in packs), name
        rows.append((name, len(packs), sum(lengths) / (len(packs) * budget), seconds))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--samples", type=int, default=100_000, help="synthetic samples per distribution")
    parser.add_argument("--data", nargs="+", help="conversation files: measure their lengths instead")
    parser.add_argument("--model", help="with --data: the model folder (tokenizer, picture tokens)")
    parser.add_argument("--model_max_length", type=int, default=2048)
    args = parser.parse_args(argv)
    if args.data:
        if not args.model:
            parser.error("--data needs --model (its tokenizer counts the tokens)")
        sets = {", ".join(args.data): data_lengths(args.data, args.model, args.model_max_length)}
    else:
        sets = synthetic_lengths(args.samples)
    print("| lengths | samples | mean tokens | budget | packing | micro-batches | fill | plan s |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for label, lengths in sets.items():
        for budget in args.budgets:
            for method, count, fill, seconds in measure(lengths, budget):
                print(
                    f"| {label} | {len(lengths)} | {np.mean(lengths):.0f} | {budget} | {method} | {count} "
                    f"| {fill:.1%} | {seconds:.2f} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
