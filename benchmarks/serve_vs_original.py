"""Speed of `qwenvl-train serve` against the server the original Qwen-VL ships (its ``openai_api.py``), text only.

    PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/serve_vs_original.py \\
        --remote-code DIR --openai-api FILE [--clients 1 4 8] [--duration 30] [--max-tokens 24]
    PYTHONPATH=src python benchmarks/serve_vs_original.py --ours-only --clients 1 --duration 2   # our half alone

What it needs, none of which it downloads (only pip reaches a package index, when it builds the venv):

- ``--remote-code DIR``: the five remote-code files of the Qwen/Qwen-VL-Chat model repository
  (``configuration_qwen.py``, ``modeling_qwen.py``, ``qwen_generation_utils.py``, ``tokenization_qwen.py``,
  ``visual.py``), e.g. copied from a download of that repository (they lie beside its weights);
- ``--openai-api FILE``: ``openai_api.py`` of the QwenLM/Qwen-VL GitHub repository (default: DIR/openai_api.py);
- ``--venv DIR`` (default ``~/.cache/qwenvl-train/original-4.32-venv``): a virtual environment with
  transformers 4.32.0 and what ``openai_api.py`` and the remote code import (``ORIGINAL_PINS``), built with pip on
  first use (torch pinned to this environment's 2.13.0 in the same pip call) and reused while its pins match.

Both servers load one checkpoint: the tiny random model (``make-tiny``, the original on-disk format with its
``auto_map``) with the remote-code files copied beside it, its ``generation_config.json`` set to greedy with
``--max-tokens`` new tokens (the original reads its sampling settings from there; a request cannot set them).
Each runs in its own process on 127.0.0.1: the original as ``python openai_api.py -c CKPT --cpu-only`` in the
venv, ours as ``qwenvl-train serve --max-batch-size 8`` (``serve_load.Server``). Before timing, one greedy
request to each checks that both answer the same text (the token count of ours, from ``usage``, then stands for
the original's too, which reports no usage). Then for each number of ``--clients``, that many closed-loop
clients (``serve_load.load``) send the same short question for ``--duration`` seconds to one server and then
the other, the first one alternating row by row, so that a change in the machine's load falls on both alike.

The original cannot stream (it answers 400 to ``stream: true``) and runs generation inside its ``async`` handler,
so it answers one request at a time; its time to first token is its whole latency. Ours streams: its time to
first token is the first content chunk. Printed: a row per server and client count (requests/s, tokens/s, time
to first token and latency p50/p99), then per client count ours / original throughput and original / ours time to
first token; the goal (issue #27): at 8 clients at least 5x the original's throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import Server, ServerEnded, free_port, load, stop_process, wait_until_answering  # noqa: E402

REMOTE_CODE = (
    "configuration_qwen.py",
    "modeling_qwen.py",
    "qwen_generation_utils.py",
    "tokenization_qwen.py",
    "visual.py",
)
#: The original's environment: transformers 4.32 (the version its README asks for) and what openai_api.py and the
#: remote code import, at versions that install on Python 3.11 (pydantic 2: openai_api.py calls model_dump_json).
ORIGINAL_PINS = (
    "torch==2.13.0",
    "transformers==4.32.0",
    "tokenizers==0.13.3",
    "accelerate==0.21.0",
    "tiktoken==0.14.0",
    "einops==0.7.0",
    "transformers_stream_generator==0.0.4",
    "fastapi==0.110.0",
    "pydantic==2.6.4",
    "uvicorn==0.29.0",
    "sse_starlette==2.0.0",
    "matplotlib==3.8.4",
    "numpy<2",
    "pillow",
    "requests",
)
#: visual.py imports torchvision.transforms, but torchvision's wheels on PyPI are built against a CUDA torch and
#: cannot load beside the CPU torch 2.13.0 here ("operator torchvision::nms does not exist"). The model builds its
#: picture transform at load time and calls it only on pictures, which a text workload never sends: this stand-in,
#: put on the original's path, supplies the names and refuses to be called.
TORCHVISION_STANDIN = {
    "torchvision/__init__.py": '"""Stand-in written by benchmarks/serve_vs_original.py (no pictures)."""\n',
    "torchvision/transforms/__init__.py": """\
\"\"\"Stand-in for torchvision.transforms: the names visual.py imports; calling one is an error.\"\"\"
import enum


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


class _NotForPictures:
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        raise RuntimeError("serve_vs_original's torchvision stand-in: the text workload sends no picture")


Compose = Resize = ToTensor = Normalize = _NotForPictures
""",
}
QUESTION = "Tell me a story about a red circle and a blue square."
DEFAULT_VENV = Path.home() / ".cache" / "qwenvl-train" / "original-4.32-venv"


class SetupError(Exception):
    """A missing input or a failed build: printed as one line, exit status 1."""


def check_inputs(remote_code: Path | None, openai_api: Path | None) -> tuple[Path, Path]:
    """The remote-code folder and ``openai_api.py``, or a SetupError naming what is missing."""
    if remote_code is None:
        raise SetupError(
            f"--remote-code DIR is required: a folder with {', '.join(REMOTE_CODE)} of the Qwen/Qwen-VL-Chat "
            "model repository (or run --ours-only)"
        )
    if not remote_code.is_dir():
        raise SetupError(f"--remote-code {remote_code}: not a folder")
    missing = [name for name in REMOTE_CODE if not (remote_code / name).is_file()]
    if missing:
        raise SetupError(
            f"--remote-code {remote_code}: missing {', '.join(missing)} (the Qwen/Qwen-VL-Chat remote code)"
        )
    api = openai_api or remote_code / "openai_api.py"
    if not api.is_file():
        raise SetupError(f"--openai-api {api}: no such file (openai_api.py of the QwenLM/Qwen-VL repository)")
    return remote_code, api


def ensure_venv(venv: Path) -> Path:
    """The venv's python, building the venv with pip when its recorded pins differ from ``ORIGINAL_PINS``."""
    python = venv / "bin" / "python"
    marker = venv / "qwenvl-original-pins.txt"
    wanted = "\n".join(ORIGINAL_PINS) + "\n"
    if python.is_file() and marker.is_file() and marker.read_text() == wanted:
        return python
    print(f"building {venv} (transformers 4.32; pip, once) ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = venv / "pip.log"
    with log.open("w") as fh:
        done = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *ORIGINAL_PINS],
                              stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
    if done.returncode != 0:
        raise SetupError(f"pip could not build the original's venv (exit {done.returncode}); see {log}")
    marker.write_text(wanted)
    return python


def write_checkpoint(folder: Path, remote_code: Path | None, max_tokens: int) -> Path:
    """The tiny model in the original format, the remote code beside it, greedy ``max_tokens`` generation."""
    from qwenvl_train.tiny import make_tiny

    make_tiny(folder, seed=0)
    if remote_code is not None:
        for name in REMOTE_CODE:
            shutil.copyfile(remote_code / name, folder / name)
    generation = json.loads((folder / "generation_config.json").read_text())
    generation.update(do_sample=False, max_new_tokens=max_tokens)
    generation.pop("top_p", None)
    generation.pop("top_k", None)
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return folder


class OriginalServer:
    """``openai_api.py`` in the venv, in its own process on 127.0.0.1 (offline, caches under ``scratch``)."""

    def __init__(self, python: Path, api: Path, checkpoint: Path, scratch: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        shim = scratch / "shim"
        for name, text in TORCHVISION_STANDIN.items():
            (shim / name).parent.mkdir(parents=True, exist_ok=True)
            (shim / name).write_text(text)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(
            PYTHONPATH=str(shim), HF_HOME=str(scratch / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"
        )
        env.setdefault("OMP_NUM_THREADS", "2")
        # tokenization_qwen.py fetches a font into its working folder at import unless SimSun.ttf is there; only
        # its box drawing reads it, which a text workload never calls: an empty stand-in keeps the run offline.
        (scratch / "SimSun.ttf").touch()
        self.log = (scratch / "original.log").open("w")
        args = [str(python), str(api), "-c", str(checkpoint), "--cpu-only", "--server-port", str(self.port),
                "--server-name", "127.0.0.1"]  # fmt: skip
        self.process = subprocess.Popen(
            args, env=env, cwd=scratch, stdout=subprocess.DEVNULL, stderr=self.log
        )
        try:
            wait_until_answering(self.process, f"{self.url}/v1/models", 300, poll=0.5)
        except ServerEnded:
            self.log.close()
            lines = [line for line in Path(self.log.name).read_text().splitlines() if line.strip()]
            last = lines[-1] if lines else "no output"
            raise SetupError(f"openai_api.py ended with status {self.process.returncode}: {last}") from None
        except TimeoutError:
            self.stop()
            raise SetupError("openai_api.py did not answer in 300 s") from None

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


def ours_payload(max_tokens: int) -> dict:
    return {"model": "demo", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip


def original_payload() -> dict:
    return {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": QUESTION}]}


def answer_once(url: str, payload: dict) -> tuple[str, int | None]:
    """One non-streamed answer: its text and ``usage.completion_tokens`` (None when the server gives none)."""
    response = httpx.post(f"{url}/v1/chat/completions", json={**payload, "stream": False}, timeout=300)
    response.raise_for_status()
    data = response.json()
    usage = data.get("usage") or {}
    return data["choices"][0]["message"]["content"], usage.get("completion_tokens")


def plain_sender(tokens: int):  # noqa: ANN201
    """A ``serve_load.load`` sender for a server that cannot stream: time to first token is the whole latency."""

    def send(client: httpx.Client, url: str, payload: dict) -> dict:
        start = time.monotonic()
        response = client.post(f"{url}/v1/chat/completions", json=payload)
        latency = time.monotonic() - start
        if response.status_code != 200:
            return {"status": response.status_code}
        return {"status": 200, "ttft": latency, "latency": latency, "tokens": tokens}

    return send


def print_row(name: str, clients: int, row: dict) -> None:
    print(f"{name:>9}{clients:>8}{row['requests']:>9}{row['rps']:>8.2f}{row['tps']:>8.1f}{row['ttft50']:>10.3f}"
          f"{row['ttft99']:>10.3f}{row['lat50']:>9.3f}{row['lat99']:>9.3f}"
          + (f"  ({row['errors']} errors)" if row["errors"] else ""), flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--remote-code", type=Path, help="folder with the Qwen-VL-Chat remote-code files")
    parser.add_argument(
        "--openai-api", type=Path, help="openai_api.py of QwenLM/Qwen-VL (default: DIR/openai_api.py)"
    )
    parser.add_argument(
        "--venv", type=Path, default=DEFAULT_VENV, help="the original's transformers-4.32 venv"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per row and server")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument(
        "--ours-only", action="store_true", help="measure our server alone (no original needed)"
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except SetupError as exc:
        print(f"serve_vs_original: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    remote_code = api = python = None
    if not args.ours_only:
        remote_code, api = check_inputs(args.remote_code, args.openai_api)
        python = ensure_venv(args.venv)
    scratch_dir = tempfile.TemporaryDirectory(prefix="serve-vs-original-")
    scratch = Path(scratch_dir.name)
    checkpoint = write_checkpoint(scratch / "Qwen-VL-Chat", remote_code, args.max_tokens)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; cores: {os.cpu_count()}")
    servers: dict[str, object] = {}
    try:
        servers["ours"] = Server(checkpoint, 8)
        text, tokens = answer_once(servers["ours"].url, ours_payload(args.max_tokens))
        senders = {"ours": (ours_payload(args.max_tokens), None)}
        if python is not None:
            servers["original"] = OriginalServer(python, api, checkpoint, scratch)
            original_text, _ = answer_once(servers["original"].url, original_payload())
            # The original's _decode_chatml cuts the last token of an answer that no stop token ended (its loop
            # variable stops one short), so with --max-tokens tokens its text is ours less the last token.
            same = original_text.strip() == text.strip()
            prefix = (
                not same and bool(original_text.strip()) and text.strip().startswith(original_text.strip())
            )
            verdict = "yes" if same else "yes, the original's is ours less its last token" if prefix else "NO"
            print(f"greedy answers identical: {verdict} ({tokens} tokens generated; the original reports no count, "
                  f"ours stands for it{'' if same or prefix else ', an estimate here'})")  # fmt: skip
            if not (same or prefix):
                common = next(
                    (k for k, (a, b) in enumerate(zip(text, original_text, strict=False)) if a != b), None
                )
                common = min(len(text), len(original_text)) if common is None else common
                print(f"  they agree on their first {common} of {len(text)} (ours) and {len(original_text)} "
                      f"(original) characters; then ours: {text[common:common + 40]!r}, original: "
                      f"{original_text[common:common + 40]!r}")  # fmt: skip
            senders["original"] = (original_payload(), plain_sender(tokens))
        for name, (payload, send) in senders.items():
            load(servers[name].url, 1, 2.0, payload, send)  # warm-up
        print(f"{'server':>9}{'clients':>8}{'requests':>9}{'req/s':>8}{'tok/s':>8}{'ttft p50':>10}{'ttft p99':>10}"
              f"{'lat p50':>9}{'lat p99':>9}")  # fmt: skip
        print("-" * 80)
        rows: dict[tuple[str, int], dict] = {}
        names = list(senders)
        for turn, clients in enumerate(args.clients):
            for name in names if turn % 2 == 0 else names[::-1]:
                payload, send = senders[name]
                rows[(name, clients)] = load(servers[name].url, clients, args.duration, payload, send)
                print_row(name, clients, rows[(name, clients)])
    finally:
        for server in servers.values():
            server.stop()
    print()
    for clients in args.clients:
        if ("original", clients) not in rows:
            continue
        ours, original = rows[("ours", clients)], rows[("original", clients)]
        print(f"{clients} clients: ours / original: {ours['tps'] / original['tps']:.2f}x tokens/s, "
              f"{ours['rps'] / original['rps']:.2f}x requests/s; time to first token original / ours: "
              f"p50 {original['ttft50'] / ours['ttft50']:.1f}x, p99 {original['ttft99'] / ours['ttft99']:.1f}x")  # fmt: skip
    if ("original", 8) in rows:
        ratio = rows[("ours", 8)]["tps"] / rows[("original", 8)]["tps"]
        print(f"goal (8 clients, at least 5x the original's throughput): {ratio:.2f}x, "
              f"{'met' if ratio >= 5 else 'NOT met'}")  # fmt: skip
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    scratch_dir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
