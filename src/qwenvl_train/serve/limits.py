"""The server's limits on requests (the ``serve`` options): how long a body may take, how many requests may wait,
how much picture memory they may hold, how many pictures one request may name and fetch at once, and how long a
shutdown waits for answers in progress.

Beyond a limit a request is refused at once (413, 408, 429 or 503 with ``Retry-After``): an overloaded server
answers "later" rather than running out of memory or time. The connection limits (head deadline, header size and
count) are :class:`.http_guard.HttpLimits`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: What ``Retry-After`` says when the server is busy (seconds).
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Limits:
    """Per-request and per-server limits (defaults: the ``serve`` options' defaults)."""

    body_timeout: float = 30.0
    max_waiting: int = 64
    max_queued_image_bytes: int = 1 << 30
    max_images: int = 16
    max_concurrent_fetches: int = 4
    shutdown_timeout: float = 30.0
