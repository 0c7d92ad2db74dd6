"""Overload and hang-ups on a real server: beyond ``--max-waiting`` a request is a 429 with ``Retry-After`` at
once, beyond the queued picture memory a 503; ``/health`` says how many wait and generate; a client that hangs up
(streaming or not) frees its batch row at once; ``/metrics`` counts what happened."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve_fixtures import png_data_url, running_server

LONG = 100_000  # never reached: the window ends the answer first, long after the test is done


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    from qwenvl_train.inference.loading import load_for_inference

    return load_for_inference(str(tiny_model_dir), device="cpu")


def body(
    text: str = "Tell me a long story", max_tokens: int = LONG, stream: bool = False, pictures: int = 0
) -> dict:
    content: list[dict] = [
        {"type": "image_url", "image_url": {"url": png_data_url(colour=(k * 40, 10, 10))}}
        for k in range(pictures)
    ]
    content.append({"type": "text", "text": text})
    return {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": stream,
        "temperature": 0,
    }


def raw_post(url: str, payload: dict) -> socket.socket:
    """A request sent on a raw socket, its answer never read (the caller hangs up by closing the socket)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    data = json.dumps(payload).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
    )
    return sock


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=5).json()


def wait_for(url: str, active: int, waiting: int, within: float = 5.0) -> float:
    """Seconds until ``/health`` shows these counts (fails the test after ``within``)."""
    start = time.monotonic()
    while True:
        state = health(url)
        if (state["active"], state["waiting"]) == (active, waiting):
            return time.monotonic() - start
        assert time.monotonic() - start < within, (
            f"/health stayed {state}, expected active={active} waiting={waiting}"
        )
        time.sleep(0.02)


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def server(loaded) -> Iterator[str]:
    with running_server(*loaded, max_batch_size=1, max_waiting=2) as url:
        yield url


def test_non_streaming_hang_up_frees_its_row_at_once(server: str) -> None:
    sock = raw_post(server, body())
    wait_for(server, active=1, waiting=0)
    sock.close()
    assert wait_for(server, active=0, waiting=0, within=2.0) < 1.0


def test_streaming_hang_up_frees_its_row_at_once(server: str) -> None:
    with httpx.stream(
        "POST", f"{server}/v1/chat/completions", json=body(stream=True), timeout=30
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a dropped iterator closes the response
        next(lines)
        wait_for(server, active=1, waiting=0)
    assert wait_for(server, active=0, waiting=0, within=2.0) < 1.0


def test_beyond_max_waiting_is_429_with_retry_after_at_once(server: str) -> None:
    busy = raw_post(server, body())  # takes the only row
    wait_for(server, active=1, waiting=0)
    queued = [raw_post(server, body()) for _ in range(2)]
    wait_for(server, active=1, waiting=2)
    started = time.monotonic()
    refused = httpx.post(f"{server}/v1/chat/completions", json=body(max_tokens=1), timeout=10)
    assert time.monotonic() - started < 1.0
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "server_busy"
    assert metric(server, 'qwenvl_serve_requests_total{status="429"}') >= 1
    for sock in queued:  # hang-ups while waiting leave the queue at once
        sock.close()
    wait_for(server, active=1, waiting=0, within=2.0)
    busy.close()
    wait_for(server, active=0, waiting=0, within=2.0)
    assert httpx.post(f"{server}/v1/chat/completions", json=body(max_tokens=1), timeout=30).status_code == 200


def test_queued_picture_memory_is_bounded(loaded) -> None:
    model, _ = loaded
    picture = 3 * model.config.image_size**2 * 4
    bound_mb = 3.5 * picture / (1 << 20)  # room for three waiting pictures
    with running_server(*loaded, max_batch_size=1, max_waiting=8, max_queued_image_mb=bound_mb) as url:
        busy = raw_post(url, body())
        wait_for(url, active=1, waiting=0)
        waiting = raw_post(url, body(max_tokens=1, pictures=2))
        wait_for(url, active=1, waiting=1)
        refused = httpx.post(f"{url}/v1/chat/completions", json=body(max_tokens=1, pictures=2), timeout=10)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
        too_many = httpx.post(f"{url}/v1/chat/completions", json=body(max_tokens=1, pictures=4), timeout=10)
        assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "too_many_images"
        text_only = raw_post(url, body(max_tokens=1))  # needs no picture memory: it may wait
        wait_for(url, active=1, waiting=2)
        busy.close()
        wait_for(url, active=0, waiting=0, within=10.0)
        waiting.close()
        text_only.close()
