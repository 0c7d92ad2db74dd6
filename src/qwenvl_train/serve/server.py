"""The uvicorn server of ``serve``: the guarded HTTP protocol, and a graceful shutdown on SIGTERM / Ctrl-C.

uvicorn's own handling of a signal stops accepting, waits ``timeout_graceful_shutdown`` for the connections,
then *cancels* what is left (a stream is cut with no error event and no ``[DONE]``) and finally re-raises the
signal, so the code after ``run`` (closing the engine) never runs. Here a signal instead:

1. stops accepting (uvicorn closes the listening sockets; idle keep-alive connections are closed), and the app
   answers 503 to any request that still arrives (``state.draining``);
2. lets the answers in progress finish for ``shutdown_timeout`` seconds;
3. then the engine ends the rest with "the server is shutting down": a stream gets that error event and
   ``[DONE]``, a plain request a 503; uvicorn's own deadline (a few seconds later) is only a backstop;
4. returns normally from :meth:`Server.run` (no re-raised signal), so the caller closes the engine and the
   request log and the process exits 0. A second Ctrl-C still stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Generator
from typing import Any

import uvicorn

from .http_guard import guarded_protocol

#: uvicorn cancels what is still running this long after the engine ended it (it should be nothing by then).
BACKSTOP_S = 5.0
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Server(uvicorn.Server):
    """uvicorn's server with the shutdown of the module docstring; ``state`` is the app's ``ServerState``."""

    def __init__(self, config: uvicorn.Config, state: Any) -> None:
        super().__init__(config)
        self.state = state

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's, without re-raising the signal afterwards (the caller's cleanup runs; exit status 0)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.state.draining = True
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.state.limits.shutdown_timeout, self.state.batcher.abort)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()


def make_server(app: Any, state: Any, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Server:
    """The server for ``app`` (``options``: more ``uvicorn.Config`` keywords, e.g. ``log_level``)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(state.http_limits),
        timeout_keep_alive=5,
        timeout_graceful_shutdown=int(state.limits.shutdown_timeout + BACKSTOP_S),
        log_level=options.pop("log_level", "warning"),
        **options,
    )
    return Server(config, state)
