"""Who may talk to the server from a browser: the ``Host`` allow-list, the ``Origin`` check and the page's headers.

- ``Host``: a server without an API key answers only requests addressed to a loopback name (``localhost``,
  ``127.0.0.1``, ``[::1]``) or to a name ``--allowed-hosts`` lists (``*``: any). A web page on another site
  cannot then reach it through DNS rebinding (its name pointed at 127.0.0.1: the browser still sends that name
  as ``Host``). With a key, every name is accepted unless ``--allowed-hosts`` is given.
- ``Origin``: a request a browser sends from another site (``Origin`` names another host or port than the
  ``Host`` it was sent to) is refused with 403, so a cross-site "simple" POST (``text/plain``, no preflight) cannot
  make the server work; clients outside a browser send no ``Origin``.
- The page and its files carry ``Content-Security-Policy`` (its own scripts and styles only; no frames),
  ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``: the page keeps the API key in
  ``localStorage``, so no other script may run in it and no other site may frame it.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from .schema import APIError

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class HostRules:
    """The names the server answers to: ``allowed`` (lower case; ``*`` any), None: the default of the docstring."""

    allowed: frozenset[str] | None = None
    keyed: bool = False

    def accepts(self, name: str) -> bool:
        if self.allowed is None:
            return self.keyed or name in LOOPBACK_NAMES
        return "*" in self.allowed or name in self.allowed or name in LOOPBACK_NAMES


def host_name(header: str) -> str:
    """The name of a ``Host`` header, without its port and brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def same_origin(origin: str, host: str) -> bool:
    """True when ``origin`` names the host the request was sent to (``Host``): same name, same port (a port left
    out is the origin scheme's default). The scheme is not compared: behind a proxy that ends TLS the server
    itself speaks plain HTTP while the page's origin is ``https://``."""
    try:
        theirs = urllib.parse.urlsplit(origin)
        mine = urllib.parse.urlsplit(f"//{host}")
        their_port, my_port = theirs.port, mine.port
    except ValueError:
        return False
    if theirs.scheme not in ("http", "https") or not theirs.hostname:
        return False
    default = 443 if theirs.scheme == "https" else 80
    return (theirs.hostname.lower() == (mine.hostname or "").lower()) and (their_port or default) == (
        my_port or default
    )


def refusal(scope: dict[str, Any], rules: HostRules) -> APIError | None:
    """Why the request of ``scope`` is refused (None: it is not)."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
    host = headers.get("host", "")
    if not rules.accepts(host_name(host)):
        return APIError(
            f"this server does not answer to the host name {host_name(host)!r} (start it with "
            "--allowed-hosts NAME, or with an API key)",
            status=403,
            type="permission_error",
            code="host_not_allowed",
        )
    origin = headers.get("origin")
    if origin is not None and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
        if not same_origin(origin, host):
            return APIError(
                f"cross-site request from {origin!r} refused",
                status=403,
                type="permission_error",
                code="cross_origin",
            )
    return None


class HostGuard:
    """ASGI middleware applying :func:`refusal` to every HTTP request."""

    def __init__(self, app: Any, rules: HostRules) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            error = refusal(scope, self.rules)
            if error is not None:
                await JSONResponse(error.body(), status_code=error.status)(scope, receive, send)
                return
            if scope["path"] == "/" or scope["path"].startswith("/static/"):
                send = _with_headers(send, PAGE_HEADERS)
        await self.app(scope, receive, send)


def _with_headers(send: Any, extra: dict[str, str]) -> Any:
    encoded = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            names = {k for k, _ in message.get("headers", [])}
            message = dict(
                message, headers=[*message.get("headers", []), *(h for h in encoded if h[0] not in names)]
            )
        await send(message)

    return sending


def install_guards(app: Any, state: Any) -> None:
    """Put :class:`HostGuard` in front of ``app`` with ``state.hosts``."""
    app.add_middleware(HostGuard, rules=state.hosts)
