"""Measure the scan on generated conversations and print the figures the data-at-scale targets are about.

    PYTHONPATH=src python benchmarks/data_scan.py --samples 40000               # ~3 min on 2 quiet cores
    PYTHONPATH=src python benchmarks/data_scan.py --samples 1000000 --small 0 --workers 2 --cached-only

Generates two-turn conversations of ~340 tokens (half of them with one of ``--images`` small PNG images, a span of
258 tokens as in the real model), written as one JSON list, for ``--small`` and ``--samples`` samples, and a model
folder holding only what the scan reads (``config.json`` with n_queries 256 and the genuine ``qwen.tiktoken``).
Every measurement runs in a fresh process (whatever ``PYTHONPATH`` points at) and prints the machine's load
average, since the figures mean little on a busy machine:

1. the scan without cache with each of ``--workers``: seconds, samples/s, peak resident memory of the calling
   process during the scan (``VmHWM`` reset before it) and of the largest process the scan ran in (a large scan
   runs in a forked process, with its workers), the caller's resident memory before and after the scan;
2. the growth of the peak between the two sizes, in bytes per token (target: at most 8), and of the memory after
   the scan, per sample (target: none);
3. the 2-worker / 1-worker speed ratio (target: at least 1.7 on 2 cores);
4. the first run with the cache (scan, write, fsync) and then a run that finds it: seconds to the first batch of
   training (tokenizer, cache lookup, dataset, a collated batch with its images; target: under 5 s for 1M samples).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the a red green blue square circle picture shows small large left right above below near "
    "colour shape object table window person dog cat car tree house street sky water light dark"
).split()


def generate(folder: Path, n_samples: int, n_images: int, seed: int = 0) -> Path:
    """Write ``n_samples`` conversations (one JSON list, written as it goes) and ``n_images`` PNGs."""
    from PIL import Image

    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        Image.new("RGB", (64 + i, 48), (i * 7 % 256, 90, 200)).save(folder / "images" / f"{i}.png")
    path = folder / "train.json"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[")
        for i in range(n_samples):
            with_image = i % 2 == 0
            n_words = 30 if with_image else 150  # ~340 tokens either way (an image span is 258)
            question = " ".join(rng.choices(WORDS, k=n_words))
            answer = " ".join(rng.choices(WORDS, k=n_words))
            if with_image:
                question = f"Picture 1: <img>images/{rng.randrange(n_images)}.png</img>\n{question}?"
            sample = {
                "id": f"s{i}",
                "conversations": [
                    {"from": "user", "value": question},
                    {"from": "assistant", "value": answer + "."},
                ],
            }
            fh.write(("" if i == 0 else ",\n") + json.dumps(sample))
        fh.write("]\n")
    return path


def model_folder(folder: Path) -> Path:
    """``config.json`` (n_queries 256, image size 448) and the genuine vocabulary: all the scan reads."""
    from qwenvl_train.vocab import ensure_vocab

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps({"model_type": "qwen", "visual": {"n_queries": 256, "image_size": 448}})
    )
    ensure_vocab(dest=folder)
    return folder


def rss_kib(field: str = "VmRSS") -> int:
    """Resident memory of this process now (``VmHWM``: its peak), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    """CPU time of this process and of its children that ended (the scan's processes), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def reset_peak() -> bool:
    """Start the peak resident memory (``VmHWM``) afresh, so that it measures what follows, not the imports."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- what runs in the fresh processes
def child_scan(data: str, model: str, workers: int, cache: str) -> dict:
    """Scan once; the figures of this process."""
    from qwenvl_train.data import DataOptions, scan
    from qwenvl_train.data.dataset import ConversationDataset
    from qwenvl_train.tokenizer import QwenVLTokenizer

    tokenizer = QwenVLTokenizer(vocab_file=f"{model}/qwen.tiktoken")
    before = rss_kib()
    peak_reset = reset_peak()
    cpu = cpu_seconds()
    start = time.perf_counter()
    options = DataOptions(preprocessing_num_workers=workers, data_cache=cache, on_error="skip")
    result = scan([data], tokenizer, options, n_queries=256)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    dataset = ConversationDataset(result, image_size=448)
    import gc

    gc.collect()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "seconds": seconds,
        "cpu": cpu,
        "samples": result.summary.samples_read,
        "kept": len(dataset),
        "tokens": int(result.items.offsets[-1]),
        "rss_before": before,
        "peak": rss_kib("VmHWM") if peak_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "worker_peak": children,
        "rss_after": rss_kib(),
        "provenance": result.provenance,
    }


def child_start(data: str, model: str, cache: str) -> dict:
    """What a training run that finds its cache does before its first step, timed from the process start."""
    t0 = time.perf_counter()
    import torch

    from qwenvl_train.data import DataCollator, DataOptions, scan
    from qwenvl_train.data.dataset import ConversationDataset
    from qwenvl_train.tokenizer import QwenVLTokenizer

    t_import = time.perf_counter()
    tokenizer = QwenVLTokenizer(vocab_file=f"{model}/qwen.tiktoken")
    t_tokenizer = time.perf_counter()
    result = scan([data], tokenizer, DataOptions(data_cache=cache, on_error="skip"), n_queries=256)
    dataset = ConversationDataset(result, image_size=448)
    t_data = time.perf_counter()
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:8].tolist()
    batch = DataCollator(pad_id=tokenizer.pad_token_id)([dataset[i] for i in order])
    t_batch = time.perf_counter()
    return {
        "import": t_import - t0,
        "tokenizer": t_tokenizer - t_import,
        "cache_and_dataset": t_data - t_tokenizer,
        "first_batch": t_batch - t_data,
        "total_after_import": t_batch - t_import,
        "batch_shape": list(batch["input_ids"].shape),
        "rss_after": rss_kib(),
        "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "provenance": result.provenance,
    }


def run_child(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"child {args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} cores"


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


# ---------------------------------------------------------------- the measurements
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=40000)
    parser.add_argument(
        "--small", type=int, default=None, help="the smaller size (default samples/4; 0: none)"
    )
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="scans per size and worker count (best kept)")
    parser.add_argument(
        "--keep", default=None, help="generate into (and reuse) this folder instead of a temporary one"
    )
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="skip the scans without cache (steps 1-3): for one large size",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_scan(rest[0], rest[1], int(rest[2]), rest[3]) if kind == "scan" else child_start(*rest)
        print("RESULT " + json.dumps(result), flush=True)
        return

    small = args.samples // 4 if args.small is None else args.small
    sizes = [n for n in (small, args.samples) if n]
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="data-scan-"))
    try:
        measure(folder, sizes, args)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def measure(folder: Path, sizes: list[int], args: argparse.Namespace) -> None:
    import qwenvl_train

    model = model_folder(folder / "model")
    data = {}
    for n in sizes:
        path = folder / f"data{n}" / "train.json"
        if not path.exists():
            start = time.perf_counter()
            generate(path.parent, n, args.images)
            print(
                f"generated {n} samples ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s"
            )
        data[n] = path
    print(f"code: {Path(qwenvl_train.__file__).parent}; {load()}")

    scans: dict[tuple[int, int], dict] = {}
    for n in [] if args.cached_only else sizes:
        for workers in args.workers:
            runs = [
                run_child("scan", str(data[n]), str(model), str(workers), "off") for _ in range(args.repeat)
            ]
            best = min(runs, key=lambda r: r["seconds"])
            scans[n, workers] = best
            print(
                f"scan {n} samples ({best['tokens']} tokens kept), {workers} worker(s), no cache: "
                f"{best['seconds']:.1f} s = {best['samples'] / best['seconds']:.0f} samples/s; peak RSS of the "
                f"caller {mib(best['peak'])}, of the largest scan process {mib(best['worker_peak'])}; caller's RSS "
                f"before {mib(best['rss_before'])}, after {mib(best['rss_after'])}; {load()}"
            )

    print("\n== targets")
    if len(sizes) == 2 and scans:
        lo, hi = sizes
        for workers in args.workers:
            a, b = scans[lo, workers], scans[hi, workers]
            tokens = b["tokens"] - a["tokens"]
            peak = (b["peak"] - a["peak"]) * 1024 / tokens
            worker = (b["worker_peak"] - a["worker_peak"]) * 1024 / tokens
            after = (b["rss_after"] - a["rss_after"]) * 1024 / (b["samples"] - a["samples"])
            print(
                f"peak memory growth, {workers} worker(s), {lo} -> {hi} samples: {peak:.2f} bytes/token in the "
                f"caller, {worker:.2f} in the largest scan process (target <= 8)"
            )
            print(
                f"memory after the scan, {workers} worker(s): {(a['rss_after'] - a['rss_before']) / 1024:+.1f} MiB "
                f"at {lo} samples, {(b['rss_after'] - b['rss_before']) / 1024:+.1f} MiB at {hi} "
                f"({after:+.1f} bytes/sample; target: flat)"
            )
    if 1 in args.workers and 2 in args.workers and scans:
        n = sizes[-1]
        ratio = scans[n, 1]["seconds"] / scans[n, 2]["seconds"]
        print(
            f"2 workers vs 1 on {n} samples: {ratio:.2f}x faster (target >= 1.7 on 2 quiet cores); {load()}"
        )
        one, two = scans[n, 1]["cpu"], scans[n, 2]["cpu"]
        print(
            f"  CPU time of all the scan's processes: {one:.1f} s with 1 worker, {two:.1f} s with 2: on 2 idle "
            f"cores 2 workers can be at most {2 * one / two:.2f}x faster (the bound the load does not move much)"
        )

    n = sizes[-1]
    cache = folder / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    workers = max(args.workers)
    first = run_child("scan", str(data[n]), str(model), str(workers), str(cache))
    size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    print(
        f"first run with the cache, {n} samples, {workers} worker(s): scan + write {first['seconds']:.1f} s "
        f"({first['samples'] / first['seconds']:.0f} samples/s), peak RSS of the caller {mib(first['peak'])}, of "
        f"the largest scan process {mib(first['worker_peak'])}; caller's RSS before {mib(first['rss_before'])}, "
        f"after {mib(first['rss_after'])}; "
        f"cache {size / 2**20:.0f} MiB; {load()}"
    )
    start = run_child("start", str(data[n]), str(model), str(cache))
    print(
        f"run that finds its cache, {n} samples: import {start['import']:.1f} s, tokenizer {start['tokenizer']:.2f} s, "
        f"cache lookup + dataset {start['cache_and_dataset']:.2f} s, first batch {start['first_batch']:.2f} s "
        f"{start['batch_shape']}: {start['total_after_import']:.2f} s after import (target < 5 s for 1M); "
        f"RSS {mib(start['rss_after'])}, peak {mib(start['peak'])}; {load()}"
    )
    print(f"  ({start['provenance']})")


if __name__ == "__main__":
    main()
