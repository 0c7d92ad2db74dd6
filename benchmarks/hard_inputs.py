"""Peak resident memory of ``qwenvl-train check-data`` on inputs that once cost many times their size.

    PYTHONPATH=src python benchmarks/hard_inputs.py                  # 200 MB non-JSON, one 50 MB record
    PYTHONPATH=src python benchmarks/hard_inputs.py --csv-mb 2 --record-mb 1   # a smoke run

Three inputs, each checked by the command line in a fresh process with ``--data_cache off``:

- ``small``: one short conversation, the baseline (imports, tokenizer);
- ``csv``: ``--csv-mb`` MB of comma-separated text named ``.json`` (once read whole into memory, doubling its window,
  before "bad JSON at 1:1");
- ``record``: one conversation whose user turn is ``--record-mb`` MB of words (once tokenized whole into a list of
  Python ints before its length was checked).

For each: the exit status, seconds, and the peak resident memory of the largest process the command ran (the
command itself or the scan it forked: ``ru_maxrss`` of the children), its growth over the baseline, and both as a
multiple of the file's size (target: peak under 3x the file). The machine's load average is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = "the a red green blue square circle picture shows small large left right above below near".split()


def write_csv(path: Path, megabytes: int) -> Path:
    row = "id,name,colour,width,height,comment\n"
    line = "12345,a small red square,red,64,48,seen on the left of the picture\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(row)
        block = line * 10_000
        for _ in range(megabytes * 1_000_000 // len(block) + 1):
            fh.write(block)
    return path


def write_record(path: Path, megabytes: int) -> Path:
    rng = random.Random(0)
    text = " ".join(rng.choices(WORDS, k=megabytes * 1_000_000 // 5))[: megabytes * 1_000_000]
    conversation = [{"from": "user", "value": text}, {"from": "assistant", "value": "ok"}]
    path.write_text(json.dumps([{"id": "big", "conversations": conversation}]), encoding="utf-8")
    return path


def write_small(path: Path) -> Path:
    conversation = [{"from": "user", "value": "hi"}, {"from": "assistant", "value": "hello"}]
    path.write_text(json.dumps([{"id": "small", "conversations": conversation}]), encoding="utf-8")
    return path


def model_folder(folder: Path) -> Path:
    """``config.json`` and the genuine vocabulary: all check-data reads."""
    from qwenvl_train.vocab import ensure_vocab

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps({"model_type": "qwen", "visual": {"n_queries": 256, "image_size": 448}})
    )
    ensure_vocab(dest=folder)
    return folder


CHILD = """
import resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
seconds = time.perf_counter() - start
last = (done.stdout.strip().splitlines() or [""])[-1]
print(done.returncode, seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, repr(last), sep="\\t")
"""


def measure(data: Path, model: Path) -> tuple[int, float, int, str]:
    """(exit status, seconds, peak KiB of the largest process, last line of the report) of one check-data run."""
    command = [sys.executable, "-m", "qwenvl_train", "check-data", str(data), "--model", str(model)]
    command += ["--data_cache", "off"]
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *command], capture_output=True, text=True, env=dict(os.environ), check=True
    ).stdout.strip()
    code, seconds, peak, last = out.split("\t")
    return int(code), float(seconds), int(peak), last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv-mb", type=int, default=200)
    parser.add_argument("--record-mb", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qwenvl-hard-") as tmp:
        folder = Path(tmp)
        model = model_folder(folder / "model")
        inputs = {
            "small": write_small(folder / "small.json"),
            "csv": write_csv(folder / "table.json", args.csv_mb),
            "record": write_record(folder / "record.json", args.record_mb),
        }
        print(f"load average at the start: {os.getloadavg()[0]:.1f}")
        print(f"{'input':<8} {'file MiB':>9} {'status':>6} {'seconds':>8} {'peak MiB':>9} {'growth MiB':>11} "
              f"{'peak/file':>10} {'growth/file':>12}  last line")  # fmt: skip
        print("-" * 100)
        baseline = None
        for name, path in inputs.items():
            size = path.stat().st_size / 2**20
            code, seconds, peak_kib, last = measure(path, model)
            peak = peak_kib / 1024
            baseline = peak if baseline is None else baseline
            growth = peak - baseline
            ratios = ("-", "-") if name == "small" else (f"{peak / size:.2f}x", f"{growth / size:.2f}x")
            print(
                f"{name:<8} {size:>9.1f} {code:>6} {seconds:>8.1f} {peak:>9.0f} {growth:>11.0f} "
                f"{ratios[0]:>10} {ratios[1]:>12}  {last}"
            )
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s in all; peak = ru_maxrss of the largest process)")
    del resource
