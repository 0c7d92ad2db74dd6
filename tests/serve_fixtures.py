"""A real ``serve`` server for the tests: uvicorn in a thread, on 127.0.0.1 and a free port, stopped by itself.

``running_server(model, tokenizer, **options)`` yields the base URL; the socket is bound to 127.0.0.1 port 0
before uvicorn starts (no race for the port), and the server and its engine are stopped on exit, with
timeouts, whatever the test did.
"""

from __future__ import annotations

import argparse
import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@contextmanager
def running_server(model: Any, tokenizer: Any, name: str = "tiny", **options: Any) -> Iterator[str]:
    """Serve ``model`` with the ``serve`` options given as keywords (``api_key=...``, ``max_batch_size=...``);
    ``shutdown_timeout`` defaults to 2 s here."""
    options.setdefault("shutdown_timeout", 2.0)
    from qwenvl_train.commands.serve import build_state
    from qwenvl_train.serve.app import create_app
    from qwenvl_train.serve.server import make_server

    args = argparse.Namespace(**options)
    state = build_state(model, tokenizer, args, name)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_server(create_app(state), state)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)
        state.batcher.close()
        sock.close()


def png_data_url(width: int = 40, height: int = 30, colour: tuple[int, int, int] = (200, 30, 30)) -> str:
    """A small PNG as a ``data:`` URL."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def free_port() -> int:
    """A port nobody listens on at 127.0.0.1 (for connection-refused cases)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
