"""Load `qwenvl-train serve` with concurrent streaming clients and print throughput and latency; then a soak run.

    PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/serve_load.py                     # ~8 min on 2 cores
    PYTHONPATH=src python benchmarks/serve_load.py --clients 1 2 --duration 3 --batch-sizes 8 --soak 0   # smoke

Each server is the real command (``python -m qwenvl_train serve``) in its own process on 127.0.0.1, on the demo
model (``make-tiny --preset demo`` written to a scratch folder unless ``--model``), one per ``--batch-sizes``
value, all started first and measured in turn (an idle server costs nothing), so that a change in the machine's
load falls on every setting alike. For each number of ``--clients``, that many threads each send streamed requests one after the other for
``--duration`` seconds (a demo picture as a data URL and a question; greedy, ``--max-tokens`` new tokens, which
an untrained model uses up, so every answer has the same length). Printed per row: requests/s, generated
tokens/s, time to first token (the first content chunk) p50/p99 and whole-request latency p50/p99; then the
issue's goal: at 8 clients at least 3x the one-at-a-time throughput (``--max-batch-size 1``), with p99 time to
first token under 2x the single-client one.

The soak run (``--soak`` seconds, 16 clients): one request in ten is malformed (bad base64, an unknown role or
invalid JSON, in turn) and one in ten hangs up after its first chunks; every other request must be answered, no
5xx may appear, and the server's resident memory (VmRSS, sampled each second after a warm-up) must stay flat.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

QUESTION = "Where is the red circle?"


def demo_picture() -> str:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (224, 224), (250, 250, 250))
    ImageDraw.Draw(image).ellipse((62, 118, 161, 217), fill=(220, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerEnded(RuntimeError):
    """The server's process ended before it answered."""


def wait_until_answering(process: subprocess.Popen, url: str, timeout: float, poll: float) -> None:
    """Poll ``url`` (GET) until it answers 200.

    Raises:
        ServerEnded: ``process`` ended first.
        TimeoutError: nothing answered within ``timeout`` seconds (the process is left running).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerEnded(f"status {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(poll)
    raise TimeoutError(url)


def stop_process(process: subprocess.Popen) -> None:
    """SIGINT (the servers' clean stop), then a kill when it has not ended in 15 s."""
    process.send_signal(2)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(15)


class Server:
    """``qwenvl-train serve`` in a child process (``extra``: more of its options), stopped with SIGINT (then
    killed) on exit."""

    def __init__(
        self, model: Path, batch_size: int, extra: tuple[str, ...] = (), start_timeout: float = 120
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "2")
        args = [sys.executable, "-m", "qwenvl_train", "serve", "--model", str(model), "--name", "demo",
                "--port", str(self.port), "--max-batch-size", str(batch_size), *extra]  # fmt: skip
        self.process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until_answering(self.process, f"{self.url}/health", start_timeout, poll=0.2)
        except ServerEnded:
            raise RuntimeError(f"the server ended: {self.process.stderr.read().decode()[-2000:]}") from None
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"the server did not start in {start_timeout:g} s") from None

    def rss_mib(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        return kib / 1024

    def stop(self) -> None:
        stop_process(self.process)


def body(picture: str, max_tokens: int) -> dict:
    content = [{"type": "image_url", "image_url": {"url": picture}}, {"type": "text", "text": QUESTION}]
    return {"model": "demo", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip


def one_request(client: httpx.Client, url: str, payload: dict, hang_up: bool = False) -> dict:
    """Send one streamed request; its status, time to first token, latency and generated tokens."""
    start = time.monotonic()
    first = None
    tokens = 0
    with client.stream("POST", f"{url}/v1/chat/completions", json=payload) as response:
        if response.status_code != 200:
            response.read()
            return {"status": response.status_code}
        chunks = 0
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunks += 1
            if hang_up and chunks >= 3:
                return {"status": "hung up"}
            data = json.loads(line[6:])
            if "error" in data:
                return {"status": "stream error", "message": data["error"]["message"]}
            if data.get("usage"):
                tokens = data["usage"]["completion_tokens"]
            if first is None and data["choices"] and data["choices"][0]["delta"].get("content"):
                first = time.monotonic() - start
    return {"status": 200, "ttft": first if first is not None else time.monotonic() - start,
            "latency": time.monotonic() - start, "tokens": tokens}  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def load(
    url: str, clients: int, duration: float, payload: dict, send: Callable[..., dict] | None = None
) -> dict:
    """``clients`` closed-loop clients for ``duration`` seconds, each request sent by ``send`` (default: a
    streamed one, :func:`one_request`; ``serve_vs_original.py`` passes a plain one for a server that cannot
    stream): a dict with ``status`` and, when 200, ``ttft``, ``latency`` and ``tokens``."""
    send = send or one_request
    results: list[dict] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def client_loop() -> None:
        with httpx.Client(timeout=300) as client:
            while time.monotonic() < stop_at:
                result = send(client, url, payload)
                with lock:
                    results.append(result)

    start = time.monotonic()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    ok = [r for r in results if r["status"] == 200]
    return {
        "requests": len(ok),
        "errors": len(results) - len(ok),
        "rps": len(ok) / elapsed,
        "tps": sum(r["tokens"] for r in ok) / elapsed,
        "ttft50": percentile([r["ttft"] for r in ok], 50),
        "ttft99": percentile([r["ttft"] for r in ok], 99),
        "lat50": percentile([r["latency"] for r in ok], 50),
        "lat99": percentile([r["latency"] for r in ok], 99),
    }


def soak(url: str, server: Server, seconds: float, clients: int, picture: str, max_tokens: int) -> dict:
    """Malformed requests and hang-ups among good ones; statuses counted, memory sampled."""
    counts: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    bad = [
        {**body("data:image/png;base64,%%%", max_tokens)},
        {"model": "demo", "messages": [{"role": "robot", "content": "hi"}]},
        None,  # invalid JSON
    ]
    bad[0]["messages"][0]["content"][0]["image_url"]["url"] = "data:image/png;base64,%%%"
    memory: list[float] = []
    counter = [0]

    def count(key: str) -> None:
        with lock:
            counts[key] = counts.get(key, 0) + 1

    def client_loop() -> None:
        with httpx.Client(timeout=300) as client:
            while time.monotonic() < stop_at:
                with lock:
                    n = counter[0]
                    counter[0] += 1
                if n % 10 == 3:
                    payload = bad[(n // 10) % 3]
                    if payload is None:
                        response = client.post(f"{url}/v1/chat/completions", content=b"{oops",
                                               headers={"content-type": "application/json"})  # fmt: skip
                    else:
                        response = client.post(f"{url}/v1/chat/completions", json=payload)
                    count(f"malformed -> {response.status_code}")
                    continue
                result = one_request(client, url, body(picture, max_tokens), hang_up=n % 10 == 7)
                count("hung up" if result["status"] == "hung up" else f"well-formed -> {result['status']}")

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    warm = time.monotonic() + min(20.0, seconds / 4)
    while any(thread.is_alive() for thread in threads):
        time.sleep(1.0)
        if time.monotonic() > warm:
            memory.append(server.rss_mib())
    for thread in threads:
        thread.join()
    return {"counts": counts, "memory": memory}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model folder (default: a fresh demo-preset model)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 1])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per row")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--soak", type=float, default=120.0, help="seconds of soak run (0: none)")
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory(prefix="serve-load-")
    model = args.model
    if model is None:
        from qwenvl_train.tiny import make_tiny

        model = make_tiny(Path(scratch.name) / "demo", seed=0, preset="demo")
    picture = demo_picture()
    payload = body(picture, args.max_tokens)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; cores: {os.cpu_count()}")
    print(f"{'batch':>6}{'clients':>8}{'requests':>9}{'req/s':>8}{'tok/s':>8}{'ttft p50':>10}{'ttft p99':>10}"
          f"{'lat p50':>9}{'lat p99':>9}")  # fmt: skip
    print("-" * 77)
    rows: dict[tuple[int, int], dict] = {}
    servers = {batch_size: Server(model, batch_size) for batch_size in args.batch_sizes}
    try:
        for server in servers.values():
            load(server.url, 1, 2.0, payload)  # warm-up
        for (
            clients
        ) in args.clients:  # the settings alternate, so a change in the machine's load hits all alike
            for batch_size, server in servers.items():
                row = rows[(batch_size, clients)] = load(server.url, clients, args.duration, payload)
                print(f"{batch_size:>6}{clients:>8}{row['requests']:>9}{row['rps']:>8.2f}{row['tps']:>8.1f}"
                      f"{row['ttft50']:>10.3f}{row['ttft99']:>10.3f}{row['lat50']:>9.3f}{row['lat99']:>9.3f}"
                      + (f"  ({row['errors']} errors)" if row["errors"] else ""), flush=True)  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
    print()
    if (8, 8) in rows and (1, 8) in rows and (8, 1) in rows:
        speedup = rows[(8, 8)]["rps"] / rows[(1, 8)]["rps"]
        ttft = rows[(8, 8)]["ttft99"] / rows[(8, 1)]["ttft99"]
        print(f"8 clients: {speedup:.2f}x the one-at-a-time throughput (goal >= 3); p99 time to first token "
              f"{ttft:.2f}x the single-client one (goal < 2)")  # fmt: skip
    if args.soak > 0:
        server = Server(model, 8)
        try:
            result = soak(server.url, server, args.soak, 16, picture, args.max_tokens)
        finally:
            server.stop()
        memory = result["memory"]
        print(
            f"soak: 16 clients, {args.soak:g} s: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(result["counts"].items()))
        )
        if memory:
            print(f"soak: resident memory after warm-up {memory[0]:.0f} MiB -> {memory[-1]:.0f} MiB "
                  f"(min {min(memory):.0f}, max {max(memory):.0f}, {len(memory)} samples)")  # fmt: skip
        fives = sum(v for k, v in result["counts"].items() if k.endswith(("-> 500", "-> 502", "-> 503")))
        print(f"soak: 5xx responses: {fives}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
