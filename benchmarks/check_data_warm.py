"""How long ``qwenvl-train check-data`` takes on a warm scan cache, and how much of it is imports.

    PYTHONPATH=src python benchmarks/check_data_warm.py [--samples 40000] [--repeat 3] [--model DIR]

Writes ``--samples`` two-turn conversations (half of them naming one of a few small PNG images, as
``benchmarks/data_scan.py`` does) and a model folder holding what check-data reads (``config.json`` and the genuine
``qwen.tiktoken``; or ``--model``, e.g. one written by ``qwenvl-train make-tiny DIR``). Runs check-data once to
fill the scan cache (a fresh cache folder), then, each in a fresh process as a user would start it:

1. the warm run, ``--repeat`` times: wall seconds (median), the exit status, the scan line (it must say the
   result came from the cache);
2. one warm run under ``python -X importtime``: the seconds spent importing (the sum of every module's own time)
   and the top-level imports that cost most (cumulative), so a regression names its import.

Target: the warm run under 3 s on the 2-core development machine. The load average is printed: on a busy machine
the figures mean little.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_scan import generate, model_folder

TARGET_SECONDS = 3.0


def run(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall seconds of one fresh process, and the process."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - start, proc


def import_profile(stderr: str) -> tuple[float, list[tuple[float, str]]]:
    """From ``-X importtime`` output: total import seconds (sum of own times) and each top-level import's
    cumulative seconds, largest first."""
    total, top = 0.0, []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not match:
            continue
        own, cumulative, indent, name = int(match[1]), int(match[2]), len(match[3]), match[4]
        total += own / 1e6
        if indent == 1:
            top.append((cumulative / 1e6, name))
    return total, sorted(top, reverse=True)


def scan_line(stdout: str) -> str:
    return next((line for line in stdout.splitlines() if line.startswith("scan:")), "(no scan line)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=40_000)
    parser.add_argument("--images", type=int, default=4, help="distinct images the samples name")
    parser.add_argument("--repeat", type=int, default=3, help="warm runs timed (the median is printed)")
    parser.add_argument("--model", help="model folder (default: config.json + qwen.tiktoken written here)")
    parser.add_argument("--top", type=int, default=8, help="top-level imports listed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = generate(folder / "data", args.samples, args.images)
        model = Path(args.model) if args.model else model_folder(folder / "model")
        env = {**os.environ, "QWENVL_TRAIN_CACHE": str(folder / "cache")}
        env.pop("QWENVL_TRAIN_VERBOSE", None)
        command = [sys.executable, "-m", "qwenvl_train", "check-data", str(data), "--model", str(model)]
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load}; {args.samples} samples")

        seconds, proc = run(command, env)
        print(
            f"first run (fills the cache)   {seconds:6.2f} s   exit {proc.returncode}   {scan_line(proc.stdout)}"
        )
        if proc.returncode not in (0, 1):
            sys.exit(f"check-data failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")

        runs = [run(command, env) for _ in range(args.repeat)]
        warm = statistics.median(t for t, _ in runs)
        last = runs[-1][1]
        verdict = "under" if warm < TARGET_SECONDS else "OVER"
        print(
            f"warm run (median of {args.repeat})      {warm:6.2f} s   exit {last.returncode}   "
            f"{verdict} the {TARGET_SECONDS:.0f} s target   {scan_line(last.stdout)}"
        )

        seconds, profiled = run([sys.executable, "-X", "importtime", *command[1:]], env)
        total, top = import_profile(profiled.stderr)
        print(f"warm run under -X importtime  {seconds:6.2f} s   of which imports {total:.2f} s")
        for cumulative, name in top[: args.top]:
            print(f"    {cumulative:6.2f} s  {name}")
        print(f"                 load {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
