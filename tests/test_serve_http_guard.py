"""HTTP hygiene against bad clients written as raw sockets (an HTTP library would refuse to be this bad): the head
and body deadlines, the head size and count limits, ambiguous framing refused with the connection closed,
``Allow`` on 405, HEAD for the page, a hang-up mid-upload logged as one quiet line, deep JSON and internal errors
answered with OpenAI error bodies that never echo the exception's text."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve_fixtures import running_server

HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[str]:
    from qwenvl_train.inference.loading import load_for_inference

    model, tokenizer = load_for_inference(str(tiny_model_dir), device="cpu")
    with running_server(model, tokenizer, header_timeout=HEAD_TIMEOUT, body_timeout=BODY_TIMEOUT) as url:
        yield url


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the test fails if it never does)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def status_and_body(reply: bytes) -> tuple[int, dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_a_connection_that_sends_nothing_is_closed_after_the_head_timeout(server: str) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        assert read_all(sock) == b""
        assert HEAD_TIMEOUT <= time.monotonic() - started < HEAD_TIMEOUT + 2


def test_half_a_head_trickled_in_is_408_at_the_deadline(server: str) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        for _ in range(3):  # each byte well within the keep-alive timeout: only the head's deadline ends it
            time.sleep(0.4)
            try:
                sock.sendall(b"X")
            except OSError:
                break
        reply = read_all(sock)
    status, body = status_and_body(reply)
    assert status == 408 and body["error"]["message"] == f"no complete request head within {HEAD_TIMEOUT:g} s"
    assert time.monotonic() - started < HEAD_TIMEOUT + 2


def test_part_of_a_body_is_408_at_the_body_deadline(server: str) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"messages"'
        )
        started = time.monotonic()
        reply = read_all(sock)
    status, body = status_and_body(reply)
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert BODY_TIMEOUT <= time.monotonic() - started < BODY_TIMEOUT + 2


@pytest.mark.parametrize(
    "headers",
    [b"X-Big: " + b"a" * (64 << 10) + b"\r\n", b"".join(b"X-%d: 1\r\n" % k for k in range(10_000))],
    ids=["64 KB header", "10,000 headers"],
)
def test_oversized_heads_are_431_and_closed(server: str, headers: bytes) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert status_and_body(reply)[1]["error"]["type"] == "invalid_request_error"


def test_content_length_with_transfer_encoding_is_refused_and_what_hides_behind_is_never_read(
    server: str,
) -> None:
    hidden = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = b"0\r\n\r\n" + hidden
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % len(body) + body
        )
        reply = read_all(sock)
    assert reply.count(b"HTTP/1.1") == 1  # one answer, then the connection is closed
    status, error = status_and_body(reply)
    assert status == 400 and "both Content-Length and Transfer-Encoding" in error["error"]["message"]


def test_conflicting_content_lengths_are_refused(server: str) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
            b"Content-Length: 3\r\n\r\n{}"
        )
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 400 ")


def test_a_good_keep_alive_connection_still_serves_two_requests(server: str) -> None:
    with connect(server) as sock:
        request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        answers = []
        for _ in range(2):
            sock.sendall(request)
            reply = b""
            while b'"waiting"' not in reply:
                reply += sock.recv(65536)
            answers.append(reply)
    assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers)


def test_405_names_the_allowed_methods_and_head_serves_the_page(server: str) -> None:
    response = httpx.delete(f"{server}/v1/chat/completions", timeout=10)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["type"] == "invalid_request_error"
    head = httpx.head(f"{server}/", timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/html")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_hang_up_mid_upload_is_one_quiet_line(server: str) -> None:
    records = Records()
    loggers = [logging.getLogger("uvicorn.error"), logging.getLogger("qwenvl_train.serve")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(records)
        logger.setLevel(logging.DEBUG)
    try:
        with connect(server) as sock:
            sock.sendall(
                b'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{"mess'
            )
            time.sleep(0.2)
        time.sleep(0.5)
        assert httpx.get(f"{server}/health", timeout=10).status_code == 200
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(records)
            logger.setLevel(level)
    assert [r.getMessage() for r in records.records if r.levelno >= logging.WARNING or r.exc_info] == []
    assert any("hung up" in r.getMessage() for r in records.records)


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deeply_nested_json_is_a_400(server: str, depth: int) -> None:
    body = b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"
    response = httpx.post(
        f"{server}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "message": "the request body is JSON nested too deeply",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_json",
    }


def test_an_internal_error_never_echoes_its_text(server: str, monkeypatch) -> None:
    from qwenvl_train.serve import app

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail /home/model")

    monkeypatch.setattr(app, "render", broken)
    response = httpx.post(f"{server}/v1/chat/completions", json=HELLO, timeout=30)
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": "internal error (the server's log has the details)",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    monkeypatch.undo()
    assert httpx.post(f"{server}/v1/chat/completions", json=HELLO, timeout=30).status_code == 200


def test_a_pipelined_answer_longer_than_the_head_timeout_is_not_cut(server: str, monkeypatch) -> None:
    """The head deadline is re-armed after each response; a request already received behind it (pipelined) is
    answered however long it takes (here its reading is made to take 1.5 head timeouts)."""
    from qwenvl_train.serve import app

    real = app.parse_and_render

    def slow(*args):
        time.sleep(1.5 * HEAD_TIMEOUT)  # in the worker thread: the event loop goes on
        return real(*args)

    monkeypatch.setattr(app, "parse_and_render", slow)
    payload = json.dumps({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 1})
    post = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(payload), payload.encode())
    )
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + post)
        reply = read_all(sock)
    assert time.monotonic() - started > 1.5 * HEAD_TIMEOUT
    assert reply.count(b"HTTP/1.1 200 OK") == 2 and b'"chat.completion"' in reply
