"""How long the command line takes to answer ``--help``, to report a wrong ``--model``, and ``import qwenvl_train``
to finish.

    PYTHONPATH=src python benchmarks/cli_startup.py [--repeat 3]

Prints one line per command: the median wall time of fresh interpreters (each run a new process, as a user
would start it), and whether anything was printed on stderr. ``train --help`` is timed twice: cold (an empty
cache folder, so the text is built with transformers) and warm (read from the cache). ``chat``, ``eval`` and
``serve`` with a ``--model`` folder that does not exist must end with their one error line (exit status 1) without
loading torch first. The target is under one second on the 2-core development machine for everything but the cold
``train --help``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
COMMANDS = ["check-data", "chat", "eval", "merge", "make-tiny", "vocab"]
#: A wrong ``--model`` for each command that loads a model (``DATA``: a valid conversations file for eval).
WRONG_MODEL = {
    "chat": ["chat", "--model", "no-such-model", "Hello"],
    "eval": ["eval", "--model", "no-such-model", "--data", "DATA"],
    "serve": ["serve", "--model", "no-such-model"],
}
CONVERSATION = '[{"id": "a", "conversations": [{"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Hello"}]}]'


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of one fresh process, and its stderr."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - start, proc.stderr


def report(name: str, argv: list[str], env: dict[str, str], repeat: int) -> None:
    runs = [timed(argv, env) for _ in range(repeat)]
    seconds = statistics.median(t for t, _ in runs)
    noise = "stderr empty" if not any(err for _, err in runs) else f"stderr: {runs[0][1].strip()[:80]!r}"
    print(f"{name:<32} {seconds:6.2f} s   {noise}", flush=True)


def report_error(name: str, argv: list[str], env: dict[str, str], repeat: int) -> None:
    """A command that must fail: the median time to its exit, its status and its (first) error line."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        runs.append((time.perf_counter() - start, proc.returncode, proc.stderr.strip().splitlines()))
    seconds = statistics.median(t for t, _, _ in runs)
    _, status, lines = runs[0]
    print(f"{name:<32} {seconds:6.2f} s   exit {status}, {len(lines)} line(s): {(lines or [''])[0][:70]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (the median is printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPATH": SRC, "QWENVL_TRAIN_CACHE": cache}
        env.pop("QWENVL_TRAIN_VERBOSE", None)
        cli = [sys.executable, "-m", "qwenvl_train"]
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load}, median of {args.repeat} runs"
        )
        report("import qwenvl_train", [sys.executable, "-c", "import qwenvl_train"], env, args.repeat)
        report("qwenvl-train --help", [*cli, "--help"], env, args.repeat)
        for command in COMMANDS:
            report(f"qwenvl-train {command} --help", [*cli, command, "--help"], env, args.repeat)
        data = Path(cache) / "data.json"
        data.write_text(CONVERSATION, encoding="utf-8")
        for command, argv in WRONG_MODEL.items():
            argv = [str(data) if arg == "DATA" else arg for arg in argv]
            report_error(f"{command} with a wrong --model", [*cli, *argv], env, args.repeat)
        report("train --help (cold cache)", [*cli, "train", "--help"], env, 1)
        report("train --help (warm cache)", [*cli, "train", "--help"], env, args.repeat)
        report("import torch (reference)", [sys.executable, "-c", "import torch"], env, 1)


if __name__ == "__main__":
    main()
