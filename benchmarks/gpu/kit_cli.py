"""Step ``cli``: the product's own commands, as a user runs them, on the big model (the full Qwen-VL-Chat shape
with random weights on a GPU): ``demo-data``, then ``train --tune lora --bf16 true`` for ``plan.cli_steps``
steps, ``merge`` of the adapter, and ``chat`` with one picture of the merged model. Each command's exit status and
seconds are recorded; a command whose input a failed one should have made is not run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from kit_common import Part, Plan, device, elapsed, model_dir

QUESTION = "Where is the red circle?"


def command(part: Part, name: str, args: list[str], timeout: float) -> bool:
    """Run ``python -m qwenvl_train ARGS``; its output goes to the log, its row to the part."""
    print(f"=== {name}: qwenvl-train {' '.join(args)}", flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "qwenvl_train", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        code, output = done.returncode, done.stdout
    except subprocess.TimeoutExpired as exc:  # its output is bytes whatever text= says
        code, output = "timeout", (exc.stdout or b"").decode(errors="replace")
    print(output, flush=True)
    tail = [line for line in output.strip().splitlines() if line.strip()][-3:]
    part.row(
        command=name, exit=code, seconds=elapsed(start), tail=" | ".join(tail)[-400:], **{"pass": code == 0}
    )
    return code == 0


def run(part: Part, work: Path, plan: Plan) -> None:
    dev = device()
    gpu = dev.type == "cuda"
    model = model_dir(work, "big")
    data, adapter, merged = work / "cli-data", work / "cli-adapter", work / "cli-merged"
    part["settings"] = {"model": plan.big, "steps": plan.cli_steps, "batch": plan.cli_batch, "bf16": gpu}
    limit = 600.0  # each command; check.sh's limit on the whole step is the one that matters
    if not command(
        part, "demo-data", ["demo-data", str(data), "--n", str(plan.cli_samples), "--n-heldout", "2"], limit
    ):
        return
    device_args = ["--bf16", "true"] if gpu else ["--use_cpu", "true", "--bf16", "false"]
    trained = command(
        part,
        "train",
        [
            "train",
            "--model_name_or_path", str(model),
            "--data_path", str(data / "train.json"),
            "--output_dir", str(adapter),
            "--tune", "lora",
            *device_args,
            "--max_steps", str(plan.cli_steps),
            "--per_device_train_batch_size", str(plan.cli_batch),
            "--model_max_length", "512",
            "--logging_steps", "5",
            "--save_strategy", "no",
            "--report_to", "none",
            "--disable_tqdm", "true",
            "--dataloader_num_workers", "2" if gpu else "0",
        ],
        limit,
    )  # fmt: skip
    if not trained:
        return
    if not command(part, "merge", ["merge", "--adapter", str(adapter), "--output", str(merged)], limit):
        return
    picture = sorted((data / "images").iterdir())[0]
    command(
        part,
        "chat",
        ["chat", "--model", str(merged), "--image", str(picture), "--greedy",
         "--max-new-tokens", str(plan.cli_new_tokens), QUESTION],
        limit,
    )  # fmt: skip
    shutil.rmtree(merged, ignore_errors=True)  # a second copy of the big model: free the memory it holds
