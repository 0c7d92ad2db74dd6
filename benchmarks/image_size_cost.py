"""Seconds per LoRA step and peak step memory against ``--image_size``, on a small model (CPU by default).

    PYTHONPATH=src python benchmarks/image_size_cost.py                          # demo model, 56 112 224 448 px
    PYTHONPATH=src python benchmarks/image_size_cost.py --sizes 56 112 --iters 2 --targets llm

The model is ``make-tiny --preset demo`` (random weights: shapes, not values, set the cost), prepared as
``train --tune lora --image_size N --lora_target ...`` prepares it (default targets ``llm resampler vit``). Each step
is one sample (one picture and a short answer), forward, backward and one AdamW step; ``--warmup`` untimed steps,
then the median of ``--iters`` timed ones. Step memory is the peak of the tensors a step creates and keeps alive at
once (tracked op by op, as ``benchmarks/train_step.py`` does on the CPU), above the resident weights. The columns
also give the ViT's patches, (N/14)^2, against the 16 image tokens the language model sees whatever N is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import TensorMemory  # noqa: E402

from qwenvl_train.data import ConversationDataset, DataCollator  # noqa: E402
from qwenvl_train.tiny import make_tiny  # noqa: E402
from qwenvl_train.training.arguments import parse_args  # noqa: E402
from qwenvl_train.training.prepare import load_model, prepare_model  # noqa: E402


def write_sample(folder: Path) -> Path:
    """One conversation about one 448 x 448 picture (resized to each N by the data pipeline)."""
    Image.new("RGB", (448, 448), (200, 40, 40)).save(folder / "red.png")
    sample = {
        "id": "s0",
        "conversations": [
            {"from": "user", "value": "Picture 1: <img>red.png</img>\nWhere is the red square?"},
            {"from": "assistant", "value": "<ref>the red square</ref><box>(100,100),(400,400)</box>"},
        ],
    }
    path = folder / "train.json"
    path.write_text(json.dumps([sample]))
    return path


def measure(model_dir: Path, data: Path, size: int, targets: list[str], warmup: int, iters: int) -> tuple:
    """``(seconds per step, step peak MiB, trainable parameters)`` at ``size`` px."""
    args = parse_args(["--model_name_or_path", str(model_dir), "--output_dir", str(data.parent / "out"),
                       "--tune", "lora", "--image_size", str(size), "--lora_target", *targets, "--lora_r", "8",
                       "--use_cpu", "--report_to", "none"])  # fmt: skip
    torch.manual_seed(0)
    model = prepare_model(load_model(args), args).train()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = ConversationDataset.from_files(
        [str(data)], tokenizer, n_queries=16, image_size=size, data_cache="off"
    )
    batch = DataCollator()([dataset[0]])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)

    def step() -> None:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    with TensorMemory() as memory:
        step()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), memory.peak / 2**20, sum(p.numel() for p in trainable)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[56, 112, 224, 448])
    parser.add_argument("--targets", nargs="+", default=["llm", "resampler", "vit"])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir = make_tiny(folder / "demo", seed=0, preset="demo")
        data = write_sample(folder)
        print(f"demo model, LoRA r=8 on {' '.join(args.targets)}, batch 1, CPU, torch {torch.__version__}, "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")  # fmt: skip
        print(
            f"{'image_size':>10} {'patches':>8} {'image tokens':>12} {'s/step':>8} {'step MiB':>9} {'trainable':>10}"
        )
        print("-" * 62)
        for size in args.sizes:
            seconds, mib, trainable = measure(model_dir, data, size, args.targets, args.warmup, args.iters)
            patches = (size // 14) ** 2
            print(f"{size:>10} {patches:>8} {16:>12} {seconds:>8.3f} {mib:>9.1f} {trainable:>10}")
        print()
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
