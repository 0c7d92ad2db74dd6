"""``GET /metrics``: the server's counters in the Prometheus text format (``prometheus_client``).

Each server has a registry of its own (several servers in one process, as in the tests, do not share counts):
requests by status, prompt and generated tokens, time to first token and request latency, rows generating
(batch occupancy), requests waiting, and the vision cache's hits and misses (the tower's runs).
"""

from __future__ import annotations

from typing import Any

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
PREFIX = "qwenvl_serve"


class Metrics:
    """The counters of one server; ``state`` gives the gauges read at each scrape."""

    def __init__(self, state: Any) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "Chat completion requests answered, by status", ["status"], registry=r
        )
        self.prompt_tokens = Counter(
            f"{PREFIX}_prompt_tokens", "Prompt tokens of completed answers", registry=r
        )
        self.generated_tokens = Counter(
            f"{PREFIX}_generated_tokens", "Tokens generated for completed answers", registry=r
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "From the request to its first text",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_latency_seconds",
            "From the request to its complete answer",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        active = Gauge(f"{PREFIX}_active_rows", "Rows generating now (batch occupancy)", registry=r)
        active.set_function(lambda: state.batcher.active_rows)
        size = Gauge(f"{PREFIX}_max_batch_size", "Rows that can generate together", registry=r)
        size.set_function(lambda: state.batcher.max_batch_size)
        waiting = Gauge(f"{PREFIX}_waiting_requests", "Requests accepted and not yet generating", registry=r)
        waiting.set_function(lambda: state.waiting)
        hits = Gauge(
            f"{PREFIX}_vision_cache_hits", "Pictures whose features came from the vision cache", registry=r
        )
        hits.set_function(lambda: _cache(state, "hits"))
        misses = Gauge(
            f"{PREFIX}_vision_cache_misses", "Pictures the vision tower encoded (cache misses)", registry=r
        )
        misses.set_function(lambda: _cache(state, "misses"))

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _cache(state: Any, name: str) -> int:
    cache = getattr(state.batcher, "vision_cache", None)
    return int(getattr(cache, name, 0)) if cache is not None else 0
