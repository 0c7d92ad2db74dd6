"""Samples/s of the data pipeline beside the samples/s a training step consumes.

    PYTHONPATH=src python benchmarks/data_pipeline.py                     # 64 samples, workers 0 1 2, medium step
    PYTHONPATH=src python benchmarks/data_pipeline.py --samples 256 --workers 0 2 4 --step_length 1024

Generates one-image conversations (~384 tokens with the 258-token image span) over ``--images`` JPEG photos-like
images of 640 x 480 (random noise, so decoding costs what a photo does), then measures, in this process:

1. tokenize: the scan (``qwenvl_train.data.scan``: read, tokenize, build ids and labels), samples/s;
2. load + transform + collate: a ``DataLoader`` over the dataset (image decode, RGB, bicubic resize to 448 px,
   CLIP normalisation, padding into batches of ``--batch``) with each of ``--workers`` worker processes, samples/s
   after the first batch (worker start-up excluded);
3. what training consumes: one optimized training micro-batch of the ``medium`` model (LoRA chat, sdpa where the
   model takes it, chunked loss, the vision cache warm and cold) at ``--step_length`` tokens, as samples/s.

The pipeline keeps up when its samples/s exceed the step's. The machine's load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step  # noqa: E402  (the sibling benchmark: model building and step timing)

WORDS = "the a red green blue square circle picture shows small large left right above below near".split()


def generate(folder: Path, n_samples: int, n_images: int, seed: int = 0) -> Path:
    """``n_samples`` one-image conversations over ``n_images`` noisy 640 x 480 JPEGs."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        pixels = noise.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{i}.jpg", quality=90)
    samples = []
    for i in range(n_samples):
        question = " ".join(rng.choices(WORDS, k=40))
        answer = " ".join(rng.choices(WORDS, k=70))
        samples.append(
            {
                "id": f"s{i}",
                "conversations": [
                    {
                        "from": "user",
                        "value": f"Picture 1: <img>images/{i % n_images}.jpg</img>\n{question}?",
                    },
                    {"from": "assistant", "value": answer + "."},
                ],
            }
        )
    path = folder / "train.json"
    path.write_text(json.dumps(samples))
    return path


def tokenizer_and_folder(folder: Path):  # noqa: ANN201
    """The genuine tokenizer, and a folder with it (the scan needs only the vocabulary)."""
    from qwenvl_train.tokenizer import QwenVLTokenizer
    from qwenvl_train.vocab import ensure_vocab

    folder.mkdir(parents=True, exist_ok=True)
    ensure_vocab(dest=folder)
    return QwenVLTokenizer(vocab_file=str(folder / "qwen.tiktoken"))


def measure_scan(data: Path, tokenizer, cache: Path) -> tuple[float, object]:  # noqa: ANN001
    """(samples/s of the scan, the dataset)."""
    from qwenvl_train.data import DataOptions, scan
    from qwenvl_train.data.dataset import ConversationDataset

    start = time.perf_counter()
    result = scan([data], tokenizer, DataOptions(data_cache=str(cache)), n_queries=256)
    seconds = time.perf_counter() - start
    return result.summary.samples_read / seconds, ConversationDataset(result, image_size=448)


def measure_loader(dataset, workers: int, batch: int) -> float:  # noqa: ANN001
    """Samples/s of a DataLoader over ``dataset`` after its first batch."""
    from qwenvl_train.data.collator import DataCollator

    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, num_workers=workers, collate_fn=DataCollator(), shuffle=False
    )
    iterator = iter(loader)
    first = next(iterator)
    count, start = 0, time.perf_counter()
    for out in iterator:
        count += out["input_ids"].shape[0]
    seconds = time.perf_counter() - start
    del first
    return count / seconds if count else float("nan")


def measure_step(size: str, length: int, tmp: Path) -> tuple[float, float]:
    """Samples/s one optimized micro-batch of the ``size`` model consumes: (vision cache cold, warm)."""
    model_dir = train_step.write_model(size, tmp / size)
    dev = train_step.device()
    model, _ = train_step.build(model_dir, "lora-chat", "sdpa", dev, None)
    config = model.get_base_model().config
    samples = train_step.synthetic_samples(config, length, 4)
    figures = []
    for warm in (False, True):
        cache = train_step.VisionFeatureCache(
            tempfile.mkdtemp(dir=tmp), model.get_base_model().transformer.visual
        )
        loss = train_step.optimized_loss(cache)
        if warm:
            for s in samples:
                cache.features(s["pixel_values"])
        start = time.perf_counter()
        for s in samples:
            loss(model, s, int((s["labels"] != -100).sum())).backward()
        figures.append(len(samples) / (time.perf_counter() - start))
    return figures[0], figures[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--step_length", type=int, default=384, help="0: skip the training-step timing")
    parser.add_argument("--step_size", choices=["medium", "tiny"], default="medium", help="tiny: smoke runs")
    args = parser.parse_args(argv)
    print(f"device: CPU, {torch.get_num_threads()} threads | load average {train_step.load_average()}")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as name:
        tmp = Path(name)
        data = generate(tmp / "data", args.samples, args.images)
        tokenizer = tokenizer_and_folder(tmp / "vocab")
        scan_rate, dataset = measure_scan(data, tokenizer, tmp / "scan-cache")
        rows = [("tokenize (scan)", "-", scan_rate)]
        for workers in args.workers:
            rows.append(
                ("load + transform + collate", str(workers), measure_loader(dataset, workers, args.batch))
            )
        if args.step_length:
            cold, warm = measure_step(args.step_size, args.step_length, tmp)
            step = f"training step, {args.step_size}, {args.step_length} tokens, vision cache"
            rows.append((f"{step} cold", "-", cold))
            rows.append((f"{step} warm", "-", warm))
    print()
    header = f"{'stage':<62} {'workers':>7} {'samples/s':>10}"
    print(header)
    print("-" * len(header))
    for stage, workers, rate in rows:
        print(f"{stage:<62} {workers:>7} {rate:>10.2f}")
    print(f"load average at the end: {train_step.load_average()}")


if __name__ == "__main__":
    main()
