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
    """The value of one sample of ``/metrics`` (``name`` with its labels as exposed); 0 when absent."""
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.split(" ")[0] == name:
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


def chat_turns(url: str, picture: str, turns: int) -> list[dict]:
    """A chat of ``turns`` questions about one picture, re-sent every turn as OpenAI clients do."""
    messages: list[dict] = []
    answers = []
    for turn in range(turns):
        content: list[dict] = [{"type": "text", "text": f"Question {turn}: what is in it?"}]
        if turn == 0:
            content.insert(0, {"type": "image_url", "image_url": {"url": picture}})
        messages.append({"role": "user", "content": content})
        payload = {"messages": messages, "max_tokens": 3, "temperature": 0}
        response = httpx.post(f"{url}/v1/chat/completions", json=payload, timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer["choices"][0]["message"]["content"] or "ok"})
    return answers


def test_a_four_turn_chat_about_one_picture_runs_the_tower_once(server: str, loaded) -> None:
    picture = png_data_url(colour=(12, 34, 56))
    names = ("hits", "misses")
    before = {n: metric(server, f"qwenvl_serve_vision_cache_{n}") for n in names}
    counted = {
        n: metric(server, n)
        for n in (
            'qwenvl_serve_requests_total{status="200"}',
            "qwenvl_serve_generated_tokens_total",
            "qwenvl_serve_request_latency_seconds_count",
        )
    }
    answers = chat_turns(server, picture, 4)
    after = {n: metric(server, f"qwenvl_serve_vision_cache_{n}") for n in names}
    assert (after["misses"] - before["misses"], after["hits"] - before["hits"]) == (1, 3)
    generated = sum(a["usage"]["completion_tokens"] for a in answers)
    assert (
        metric(server, 'qwenvl_serve_requests_total{status="200"}')
        - counted['qwenvl_serve_requests_total{status="200"}']
        == 4
    )
    assert (
        metric(server, "qwenvl_serve_generated_tokens_total") - counted["qwenvl_serve_generated_tokens_total"]
        == generated
    )
    assert (
        metric(server, "qwenvl_serve_request_latency_seconds_count")
        - counted["qwenvl_serve_request_latency_seconds_count"]
        == 4
    )
    # The cached features answer exactly as the tower run afresh does.
    with running_server(*loaded, vision_cache_mb=0) as plain:
        assert [a["choices"][0]["message"]["content"] for a in chat_turns(plain, picture, 4)] == [
            a["choices"][0]["message"]["content"] for a in answers
        ]
        assert metric(plain, "qwenvl_serve_vision_cache_misses") == 0


def test_the_vision_cache_evicts_the_least_recently_used() -> None:
    import torch

    from qwenvl_train.serve.vision_cache import VisionCache

    features = {name: torch.full((4, 8), float(k)) for k, name in enumerate("abc")}  # 128 bytes each
    cache = VisionCache(max_bytes=300, identity="t")
    cache.put("a", features["a"])
    cache.put("b", features["b"])
    assert cache.get("a") is features["a"]  # a is now the most recent
    cache.put("c", features["c"])  # over 300 bytes: b goes
    assert cache.get("b") is None and cache.get("c") is features["c"] and cache.get("a") is features["a"]
    assert (cache.hits, cache.misses, cache.bytes) == (3, 1, 256)


def test_a_huge_prompt_is_read_off_the_event_loop(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An 8 MB prompt is parsed and tokenised in a worker thread: /health answers meanwhile. Parsing and rendering
    are made to take at least 1.5 s more (a quiet machine does the 8 MB in 0.3 s), so the test does not depend on
    the machine's speed: on the event loop, that second and a half would hold every /health answer."""
    import threading

    from qwenvl_train.serve import app

    real = app.parse_and_render

    def slow(*args: object, **kwargs: object) -> object:
        time.sleep(1.5)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(app, "parse_and_render", slow)
    huge = {"messages": [{"role": "user", "content": "hello world " * 700_000}]}
    outcome: dict[str, object] = {}

    def send() -> None:
        started = time.monotonic()
        response = httpx.post(f"{server}/v1/chat/completions", json=huge, timeout=120)
        outcome["seconds"], outcome["code"] = time.monotonic() - started, response.json()["error"]["code"]

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.2)
    latencies = []
    while sender.is_alive():
        started = time.monotonic()
        assert httpx.get(f"{server}/health", timeout=30).status_code == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.05)
    sender.join()
    assert outcome["code"] == "context_length_exceeded"
    assert float(outcome["seconds"]) > 1.5  # type: ignore[arg-type]
    assert len(latencies) >= 3 and max(latencies) < 0.5
