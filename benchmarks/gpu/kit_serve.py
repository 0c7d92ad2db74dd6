"""Step ``serve``: ``qwenvl-train serve`` on the big model (the full Qwen-VL-Chat shape, random weights, bf16 on a
GPU) as a user starts it, loaded by ``plan.serve_clients`` closed-loop streaming clients in turn (1 and 8), each
for ``plan.serve_seconds``: a picture and a question per request, greedy, ``plan.serve_new_tokens`` new tokens
(an untrained model uses them all up). The load generator is ``benchmarks/serve_load.py``'s. The picture cache is
off (``--vision-cache-mb 0``), so that every request runs the vision tower as one from a new user would.

Each row: requests/s, generated tokens/s, time to first token (the first content chunk) and whole-request
latency, p50 and p99, and the failed requests (a row passes when every request was answered)."""

from __future__ import annotations

import time
from pathlib import Path

from kit_common import Part, Plan, device, elapsed, model_dir


def run(part: Part, work: Path, plan: Plan) -> None:
    import serve_load  # benchmarks/ is on the path (kit_common)

    gpu = device().type == "cuda"
    part["settings"] = {
        "model": plan.big,
        "max_batch_size": max(plan.serve_clients),
        "new_tokens": plan.serve_new_tokens,
        "seconds_per_row": plan.serve_seconds,
        "dtype": "bf16" if gpu else "fp32",
    }
    start = time.perf_counter()
    extra = ("--dtype", "bf16" if gpu else "fp32", "--vision-cache-mb", "0")
    server = serve_load.Server(
        model_dir(work, "big"), max(plan.serve_clients), extra=extra, start_timeout=180
    )
    part["start_seconds"] = elapsed(start)
    payload = serve_load.body(serve_load.demo_picture(), plan.serve_new_tokens)
    try:
        serve_load.load(server.url, 1, plan.serve_warmup_seconds, payload)  # warm-up (kernels, allocator)
        for clients in plan.serve_clients:
            row = serve_load.load(server.url, clients, plan.serve_seconds, payload)
            part.row(
                clients=clients,
                requests=row["requests"],
                errors=row["errors"],
                requests_s=round(row["rps"], 3),
                tokens_s=round(row["tps"], 1),
                ttft_p50_s=round(row["ttft50"], 4),
                ttft_p99_s=round(row["ttft99"], 4),
                latency_p50_s=round(row["lat50"], 4),
                latency_p99_s=round(row["lat99"], 4),
                **{"pass": row["errors"] == 0 and row["requests"] > 0},
            )
    finally:
        server.stop()
