"""What the steps of the GPU check kit share: the plan (sizes and counts of a real run and of the dry run), the
device, the part file each step writes as it goes, and ``benchmarks/train_step.py``, whose building blocks
(model sizes, the synthetic one-image samples, ``build``, ``Runner``, the two loss paths, FLOPs and the matmul
peak) the steps reuse rather than copy."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

GPU_DIR = Path(__file__).resolve().parent
ROOT = GPU_DIR.parent.parent
if str(GPU_DIR.parent) not in sys.path:
    sys.path.insert(0, str(GPU_DIR.parent))


def __getattr__(name: str) -> Any:
    """``train_step`` (benchmarks/train_step.py), imported on first use: it imports the model and the training
    package (several seconds), which the ``cli`` step, whose work is in the product's own processes, never needs."""
    if name == "train_step":
        import train_step

        return train_step
    raise AttributeError(name)


#: The steps, in the order check.sh runs them: setup (versions, device, the random checkpoints), then the issue's
#: five points: parity; LoRA; Q-LoRA and LoRA on a base checkpoint; the product's own commands; generation; then
#: benchmark generation (``eval --benchmark``, issue #26), the server under load (issue #27) and LoRA at higher
#: resolutions (``hires``, issue #28: a real run's second call, ``check.sh --steps hires``; the dry run runs all).
STEPS = ("setup", "parity", "lora", "qlora", "lora-base", "cli", "generate", "eval", "serve", "hires")


@dataclass(frozen=True)
class Plan:
    """Sizes and counts of one kind of run."""

    big: str  # the model of the training, CLI and generation steps (a train_step size)
    mid: str  # the parity model
    parity_length: int
    parity_samples: int
    lengths: tuple[int, ...]  # LoRA (chat) sequence lengths
    qlora_lengths: tuple[int, ...]
    base_lengths: tuple[int, ...]
    accum: int
    warmup: int
    iters: int
    cli_steps: int
    cli_batch: int
    cli_samples: int
    cli_new_tokens: int
    gen_prompt_length: int
    gen_new_tokens: int
    gen_batches: tuple[int, ...]
    eval_questions: int  # generated textvqa_val questions of the eval step
    eval_batches: tuple[int, ...]
    serve_clients: tuple[int, ...]  # closed-loop clients of each serve row (the largest is --max-batch-size)
    serve_new_tokens: int
    serve_seconds: float  # per row
    serve_warmup_seconds: float
    hires_sizes: tuple[int, ...]  # --image_size of the hires rows
    hires_length: int
    hires_targets: tuple[tuple[str, ...], ...]  # --lora_target of the hires rows
    peak_rounds: int
    peak_seconds: float
    attentions: tuple[str, ...] = (
        "eager",
        "sdpa",
        "flex_attention",
        "flash_attention_2",
        "flash_attention_3",
    )
    notes: tuple[str, ...] = field(default_factory=tuple)


#: One H200 (the issue's sizes): the full Qwen-VL-Chat shape, the original's table (384/1024/2048 tokens, one
#: image, batch 1 x grad-accum 8).
REAL = Plan(
    big="full",
    mid="medium",
    parity_length=512,
    parity_samples=2,
    lengths=(384, 1024, 2048),
    qlora_lengths=(384, 2048),
    base_lengths=(384,),
    accum=8,
    warmup=1,
    iters=3,
    cli_steps=20,
    cli_batch=4,
    cli_samples=64,
    cli_new_tokens=32,
    gen_prompt_length=384,
    gen_new_tokens=128,
    gen_batches=(1, 8),
    eval_questions=32,
    eval_batches=(1, 8),
    serve_clients=(1, 8),
    serve_new_tokens=64,
    serve_seconds=12.0,
    serve_warmup_seconds=3.0,
    hires_sizes=(448, 672, 896),
    hires_length=384,
    hires_targets=(("llm",), ("llm", "resampler", "vit")),
    peak_rounds=5,
    peak_seconds=0.3,
)

#: The dry run: the same steps on a CPU with the tiny model (16 image queries, so sequences from 64 tokens), fewer
#: lengths and steps, so that it ends in well under two minutes on two cores. flex_attention is left out there: on
#: a CPU it compiles for ~30 s.
DRY = Plan(
    big="tiny",
    mid="tiny",
    parity_length=64,
    parity_samples=2,
    lengths=(64, 96),
    qlora_lengths=(64,),
    base_lengths=(64,),
    accum=2,
    warmup=1,
    iters=1,
    cli_steps=5,
    cli_batch=1,
    cli_samples=16,
    cli_new_tokens=4,
    gen_prompt_length=64,
    gen_new_tokens=4,
    gen_batches=(1, 8),
    eval_questions=8,
    eval_batches=(1, 8),
    serve_clients=(1, 8),
    serve_new_tokens=4,
    serve_seconds=2.0,
    serve_warmup_seconds=1.0,
    hires_sizes=(56, 84, 112),
    hires_length=64,
    hires_targets=(("llm",), ("llm", "resampler", "vit")),
    peak_rounds=1,
    peak_seconds=0.1,
    attentions=("eager", "sdpa", "flash_attention_2", "flash_attention_3"),
    notes=("dry run: flex_attention not run (it compiles for ~30 s on a CPU)",),
)


def plan(dry_run: bool) -> Plan:
    return DRY if dry_run else REAL


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_dir(work: Path, which: str) -> Path:
    """Where the setup step writes the ``big`` or ``mid`` checkpoint."""
    return work / "models" / which


def gib(n_bytes: float) -> float:
    return n_bytes / 2**30


def free_cuda() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Part:
    """The JSON one step leaves in ``WORK/parts/STEP.json``, rewritten (atomically) after every measurement, so
    that a step stopped by its time limit still hands over what it measured."""

    def __init__(self, work: Path, step: str, dry_run: bool) -> None:
        self.path = work / "parts" / f"{step}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {
            "step": step,
            "state": "running",
            "dry_run": dry_run,
            "rows": [],
            "notes": [],
        }
        self.started = time.perf_counter()
        self.save()

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def row(self, **row: Any) -> dict[str, Any]:
        self.data["rows"].append(row)
        self.save()
        print("  " + json.dumps(row, default=str), flush=True)
        return row

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()
        print(f"  note: {text}", flush=True)

    def save(self) -> None:
        self.data["seconds_inside"] = round(time.perf_counter() - self.started, 2)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def elapsed(start: float) -> float:
    return round(time.perf_counter() - start, 3)
