"""Helpers shared by the tests/test_train_*.py files: a tiny image+text dataset, the usual CPU options, and
what torchrun needs on CPU."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import torch
from PIL import Image

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def write_dataset(
    folder: Path, n_samples: int = 8, image_size: int = 56, text_only: bool = True, n_text: int = 1
) -> Path:
    """``n_samples`` one-image conversations ("What colour?" -> "<colour>.") plus, with ``text_only``, ``n_text``
    conversations without image."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    samples = []
    names = list(COLORS)
    for i in range(n_samples):
        name = names[i % len(names)]
        Image.new("RGB", (image_size + 3 * i, image_size), COLORS[name]).save(folder / "images" / f"{i}.png")
        samples.append(
            {
                "id": f"s{i}",
                "conversations": [
                    {"from": "user", "value": f"Picture 1: <img>images/{i}.png</img>\nWhat colour is it?"},
                    {"from": "assistant", "value": f"It is {name}."},
                ],
            }
        )
    for i in range(n_text if text_only else 0):
        samples.append(
            {
                "id": "text" if i == 0 else f"text{i}",
                "conversations": [
                    {"from": "user", "value": "Say hello." if i == 0 else f"Say hello {i} times."},
                    {"from": "assistant", "value": "Hello!"},
                ],
            }
        )
    path = folder / "train.json"
    path.write_text(json.dumps(samples, indent=1))
    return path


def cpu_args(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """Command-line options for a short single-process CPU run on the tiny model."""
    return [
        "--model_name_or_path", str(model_dir),
        "--data_path", str(data),
        "--output_dir", str(out),
        "--use_cpu",
        "--per_device_train_batch_size", "2",
        "--logging_steps", "1",
        "--save_strategy", "no",
        "--report_to", "none",
        "--dataloader_num_workers", "0",
        "--disable_tqdm", "true",
        "--seed", "0",
        *extra,
    ]  # fmt: skip


def train_lora_two_steps(model_dir: Path, data: list[Path], out: Path):  # noqa: ANN201
    """``train --tune lora --max_steps 2`` on the CPU over every file of ``data`` (one ``--data_path``); the
    trainer it returns."""
    from qwenvl_train.training import train

    argv = cpu_args(model_dir, data[0], out, "--tune", "lora", "--max_steps", "2")
    at = argv.index("--data_path") + 1
    argv[at : at + 1] = [str(path) for path in data]
    return train(argv)


def one_line(err: str) -> str:
    """The single line a known error prints (no traceback); fails the test otherwise."""
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter, by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def logged_losses(trainer) -> list[float]:
    """The training losses the Trainer logged, in order."""
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def free_port() -> int:
    """A TCP port nobody listens on (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env() -> dict[str, str]:
    """The environment for torchrun on CPU: DeepSpeed's CPU accelerator, one thread, this venv first on PATH."""
    env = dict(os.environ)
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
