"""The HTTP/1.1 connection guard: uvicorn's h11 protocol with the limits a public server needs.

uvicorn's h11 settings cover only part of it: ``timeout_keep_alive`` closes an idle connection *between*
requests (and is reset by every byte, so a slow head defeats it), and ``h11_max_incomplete_event_size`` limits a
head only while it arrives in pieces (a 64 KB head in one read passes). h11 also accepts a request carrying both
``Content-Length`` and ``Transfer-Encoding`` (RFC 9112 lets a server go on; a proxy in front may frame it the
other way: request smuggling). So the server runs this thin subclass of uvicorn's own protocol (no other server,
no proxy hop; uvicorn's parsing, flow control and ASGI cycle are unchanged), which adds:

- a head deadline: from the connection's start, and again after each response, the next request's head must be
  complete within ``head_timeout`` seconds, however slowly it trickles (else the connection is closed, 408);
- a head limit: at most ``max_header_bytes`` bytes of request line and headers, at most ``max_headers`` headers
  (431), whatever the reads;
- ambiguous framing refused: ``Content-Length`` with ``Transfer-Encoding``, two different ``Content-Length``
  values (400); the connection is then closed, so nothing hidden behind the request is read.

Each refusal is the OpenAI error body and one quiet log line (no traceback). The body's own deadline is the
application's (:func:`.app.read_body`): it needs the route's knowledge of the size limit.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("qwenvl_train.serve")


@dataclass(frozen=True)
class HttpLimits:
    """The connection limits (``serve --header-timeout`` and the defaults)."""

    head_timeout: float = 10.0
    max_header_bytes: int = 16 << 10
    max_headers: int = 100


class Refused(h11.RemoteProtocolError):
    """A request head the guard refuses: its status and the message for the client."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, error_status_hint=status)
        self.message = message
        self.status = status


def check_head(event: h11.Request, limits: HttpLimits) -> None:
    """Refuse a request head over the limits or with ambiguous framing.

    Raises:
        Refused: 431 for size or count, 400 for the framing.
    """
    headers = list(event.headers)
    if len(headers) > limits.max_headers:
        raise Refused(
            f"the request has {len(headers)} headers, at most {limits.max_headers} are accepted", 431
        )
    size = len(event.method) + len(event.target) + 12 + sum(len(k) + len(v) + 4 for k, v in headers)
    if size > limits.max_header_bytes:
        raise Refused(f"the request head is over {limits.max_header_bytes} bytes", 431)
    lengths = {v.strip() for k, v in headers if k == b"content-length"}
    if any(k == b"transfer-encoding" for k, _ in headers) and lengths:
        raise Refused("the request has both Content-Length and Transfer-Encoding: refused", 400)
    if len(lengths) > 1:
        raise Refused("the request has conflicting Content-Length headers", 400)


class _GuardedConnection(h11.Connection):
    """h11's connection checking every request head as it is parsed."""

    limits: HttpLimits = HttpLimits()

    guard_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            if isinstance(event, h11.Request):
                check_head(event, self.limits)
                self.on_request()
        except h11.RemoteProtocolError as exc:  # kept for the answer: uvicorn's handler is not told why
            self.guard_error = exc
            raise
        return event

    def on_request(self) -> None:
        """Told when a request head was accepted (the protocol stops its head deadline)."""


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the guard (see the module docstring); made by :func:`guarded_protocol`."""

    limits: HttpLimits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conn = _GuardedConnection(h11.SERVER, self.limits.max_header_bytes + 4)
        conn.limits = self.limits
        conn.on_request = self._head_received  # type: ignore[method-assign]
        self.conn = conn
        self._head_deadline: Any = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        if self.cycle is not None and not self.cycle.response_complete:
            log.info("client %s hung up before its answer was sent", _peer(self.client))
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        # Armed first: uvicorn then parses a pipelined request already received, whose head stops it again.
        if not self.transport.is_closing():
            self._arm_head_deadline()
        super().on_response_complete()

    def _arm_head_deadline(self) -> None:
        self._stop_head_deadline()
        self._head_deadline = self.loop.call_later(self.limits.head_timeout, self._head_too_slow)

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_received(self) -> None:
        self._stop_head_deadline()

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return  # closed already, or a request is in progress: its head came in time
        if self._partial_head():
            log.info(
                "client %s: no complete request head within %g s: closed",
                _peer(self.client),
                self.limits.head_timeout,
            )
            self._send_error(408, f"no complete request head within {self.limits.head_timeout:g} s")
        else:  # nothing sent at all
            self.transport.close()

    def _partial_head(self) -> bool:
        return bool(self.conn._receive_buffer)  # noqa: SLF001 - the bytes h11 holds of a head not yet complete

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a head it cannot parse: here the OpenAI error body (the guard's own status)."""
        error = getattr(self.conn, "guard_error", None)
        if isinstance(error, Refused):
            status, message = error.status, error.message
        elif error is not None and error.error_status_hint == 431:
            status, message = 431, f"the request head is over {self.limits.max_header_bytes} bytes"
        else:
            status, message = 400, "invalid HTTP request"  # h11's reason goes to the log, not the client
        log.info("client %s: %s (%s)", _peer(self.client), message, error)
        self._send_error(status, message)

    def _send_error(self, status: int, message: str) -> None:
        """Answer ``status`` with the OpenAI error body and close the connection (whatever h11's state)."""
        body = json.dumps(
            {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
        ).encode()
        reason = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}.get(
            status, "Error"
        )
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def guarded_protocol(limits: HttpLimits) -> type[GuardedH11Protocol]:
    """The protocol class for uvicorn's ``http=`` option, with these limits."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})
