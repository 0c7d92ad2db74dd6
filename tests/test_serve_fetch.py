"""Images of a request: the SSRF rules (non-public addresses refused before any connection, on every redirect
too), the size and time limits, local files only inside --allow-local-images, and the training loader's checks.

Nothing here reaches beyond 127.0.0.1: names resolve through a patched resolver, and every connection made is
recorded and checked to go to 127.0.0.1.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from PIL import Image

from qwenvl_train.serve import fetch
from qwenvl_train.serve.fetch import ImagePolicy
from qwenvl_train.serve.schema import APIError
from serve_fixtures import running_server

PARAM = "messages[0].content[0].image_url"
SIZE = 56


def png(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    """/a.png: a picture; /redirect?to=URL: a 302; /loop: redirects to itself; /slow: waits; /big: too large;
    /trickle: headers at once, then the body a byte every 0.1 s (each read well under any socket timeout)."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        if self.path in ("/a.png", "/%E5%9B%BE%20x.png?q=%C3%BC"):  # the second: /图 x.png?q=ü as sent
            self._send(200, png())
        elif self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow":
            time.sleep(1.5)
            self._send(200, png())
        elif self.path.startswith("/hang"):
            self._hang()
        elif self.path == "/big":
            self._send(200, b"\0" * 5000)
        elif self.path == "/trickle":
            data = png()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for k in range(min(len(data), 40)):  # 4 s at most: the server thread ends by itself
                    self.wfile.write(data[k : k + 1])
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        else:
            self._send(404, b"no")

    hanging = threading.Lock()
    inflight = 0
    most_inflight = 0
    ended: list[float] = []  # when each /hang download was cut by the fetcher (the write failed)

    def _hang(self) -> None:
        """/hang: headers, then a byte every 0.05 s for 3 s: a download that only the fetcher can end early."""
        cls = type(self)
        with cls.hanging:
            cls.inflight += 1
            cls.most_inflight = max(cls.most_inflight, cls.inflight)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(60):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            cls.ended.append(time.monotonic())
        finally:
            with cls.hanging:
                cls.inflight -= 1

    def _send(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            pass


@contextmanager
def http_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def connections(monkeypatch) -> list[tuple[str, int]]:
    """Every connection the fetcher opens; any address but 127.0.0.1 fails the test before connecting."""
    made: list[tuple[str, int]] = []
    real = fetch.connect

    def guarded(address: str, port: int, timeout: float) -> socket.socket:
        made.append((address, port))
        assert address == "127.0.0.1", f"a connection to {address} was attempted"
        return real(address, port, timeout)

    monkeypatch.setattr(fetch, "connect", guarded)
    return made


@pytest.fixture
def names(monkeypatch) -> dict[str, list[str]]:
    """A resolver of our own: ``names[host]`` are its addresses (unknown names fail to resolve)."""
    table: dict[str, list[str]] = {}

    def resolve(host: str, port: int) -> list[str]:
        if host in table:
            return table[host]
        try:
            return [str(__import__("ipaddress").ip_address(host))]
        except ValueError:
            raise socket.gaierror(f"unknown test name {host}") from None

    monkeypatch.setattr(fetch, "resolve", resolve)
    return table


def refused(call, code: str) -> APIError:
    with pytest.raises(APIError) as caught:
        call()
    assert caught.value.code == code and caught.value.param == PARAM and caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1", "255.255.255.255"],
)  # fmt: skip
def test_non_public_addresses(address: str) -> None:
    assert not fetch.is_public(address)


@pytest.mark.parametrize(
    "address",
    ["64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::a9fe:a9fe", "2002:7f00:1::", "2002:a9fe:a9fe::1",
     "::127.0.0.1", "::10.0.0.1", "::ffff:192.168.0.1", "2001:0:4136:e378:8000:63bf:f5ff:fffe"],
)  # fmt: skip
def test_ipv6_forms_embedding_a_private_ipv4_are_that_ipv4(address: str) -> None:
    """NAT64, 6to4, IPv4-compatible, IPv4-mapped and Teredo (client 10.0.0.1: 0xf5fffffe inverted)."""
    assert not fetch.is_public(address)


def test_embedded_public_ipv4_stays_public() -> None:
    import ipaddress

    assert fetch.embedded_ipv4(ipaddress.IPv6Address("64:ff9b::808:808")) == ipaddress.IPv4Address("8.8.8.8")
    assert fetch.embedded_ipv4(ipaddress.IPv6Address("2002:808:808::")) == ipaddress.IPv4Address("8.8.8.8")
    assert fetch.embedded_ipv4(ipaddress.IPv6Address("2606:4700::1111")) is None
    assert fetch.is_public("64:ff9b::808:808") and fetch.is_public("2002:808:808::1")


def test_a_non_ascii_path_and_query_are_sent_percent_encoded(connections) -> None:
    allowed = ImagePolicy(allow_private_urls=True)
    with http_server() as port:
        assert fetch.fetch_url(f"http://127.0.0.1:{port}/图 x.png?q=ü", allowed, PARAM) == png()


def encoded(image: Image.Image, format: str) -> bytes:  # noqa: A002 - Pillow's name
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_picture_formats_are_decoded(format: str) -> None:  # noqa: A002
    data = encoded(Image.new("RGB", (20, 10), (200, 10, 10)), format)
    picture = fetch.decode(data, ImagePolicy(), PARAM, SIZE)
    assert (picture.width, picture.height) == (20, 10)


@pytest.mark.parametrize("format", ["PPM", "ICO", "TGA", "PCX", "EPS"])
def test_other_formats_reach_no_decoder(format: str) -> None:  # noqa: A002
    if format == "EPS":
        data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    else:
        data = encoded(Image.new("RGB", (16, 16), (1, 2, 3)), format)
    error = refused(lambda: fetch.decode(data, ImagePolicy(), PARAM, SIZE), "invalid_image")
    assert error.message == f"'{PARAM}': not a recognised image file"


def test_public_addresses() -> None:
    assert fetch.is_public("93.184.216.34") and fetch.is_public("2606:4700::1111")


@pytest.mark.parametrize("address", ["10.0.0.5", "169.254.169.254", "127.0.0.1", "::1"])
def test_private_names_are_refused_before_connecting(names, connections, address: str) -> None:
    names["pictures.test"] = ["93.184.216.34", address]  # one private address among public ones is enough
    error = refused(
        lambda: fetch.fetch_url("http://pictures.test/a.png", ImagePolicy(), PARAM), "forbidden_url"
    )
    assert address in error.message and "--allow-private-urls" in error.message
    assert connections == []


def test_literal_private_ip_is_refused_before_connecting(connections) -> None:
    refused(lambda: fetch.fetch_url("http://10.20.30.40/x.png", ImagePolicy(), PARAM), "forbidden_url")
    refused(lambda: fetch.fetch_url("http://[::1]:8080/x.png", ImagePolicy(), PARAM), "forbidden_url")
    assert connections == []


def test_every_redirect_is_checked_again(names, connections, monkeypatch) -> None:
    """A public name redirecting to a private address: the redirect is refused, never followed."""
    monkeypatch.setattr(
        fetch, "is_public", lambda address: address == "127.0.0.1"
    )  # 127.0.0.1 plays 'public'
    names["public.test"] = ["127.0.0.1"]
    names["internal.test"] = ["10.9.8.7"]
    with http_server() as port:
        data = fetch.fetch_url(f"http://public.test:{port}/a.png", ImagePolicy(), PARAM)
        assert data == png()
        url = f"http://public.test:{port}/redirect?to=http://internal.test/secret.png"
        error = refused(lambda: fetch.fetch_url(url, ImagePolicy(), PARAM), "forbidden_url")
        assert "10.9.8.7" in error.message
        refused(
            lambda: fetch.fetch_url(f"http://public.test:{port}/loop", ImagePolicy(), PARAM),
            "unreachable_url",
        )
    assert {address for address, _ in connections} == {"127.0.0.1"}


def test_limits_and_http_errors_with_private_urls_allowed(connections) -> None:
    allowed = ImagePolicy(allow_private_urls=True)
    with http_server() as port:
        base = f"http://127.0.0.1:{port}"
        picture = fetch.load(f"{base}/a.png", allowed, PARAM, SIZE)
        assert (picture.width, picture.height) == (64, 48) and tuple(picture.pixels.shape) == (3, SIZE, SIZE)
        redirected = fetch.load(f"{base}/redirect?to=/a.png", allowed, PARAM, SIZE)
        assert redirected.width == 64
        small = ImagePolicy(allow_private_urls=True, max_bytes=1000)
        refused(lambda: fetch.fetch_url(f"{base}/big", small, PARAM), "image_too_large")
        quick = ImagePolicy(allow_private_urls=True, timeout=0.3)
        refused(lambda: fetch.fetch_url(f"{base}/slow", quick, PARAM), "image_timeout")
        # A body trickling in a byte at a time: the deadline is the whole download's, not each read's.
        started = time.monotonic()
        refused(lambda: fetch.fetch_url(f"{base}/trickle", quick, PARAM), "image_timeout")
        assert time.monotonic() - started < 2.0
        refused(lambda: fetch.fetch_url(f"{base}/missing.png", allowed, PARAM), "unreachable_url")
        refused(lambda: fetch.load(f"{base}/big", allowed, PARAM, SIZE), "invalid_image")  # not an image


def test_local_images_stay_inside_their_folder(tmp_path: Path) -> None:
    root = tmp_path / "pictures"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(png())
    (tmp_path / "secret.png").write_bytes(png())
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    policy = ImagePolicy(local_dir=root)
    assert fetch.load("sub/a.png", policy, PARAM, SIZE).width == 64
    assert fetch.load(str(root / "sub" / "a.png"), policy, PARAM, SIZE).width == 64
    assert fetch.load(f"file://{root}/sub/a.png", policy, PARAM, SIZE).width == 64
    for escape in ("../secret.png", "sub/../../secret.png", str(tmp_path / "secret.png"), "link.png",
                   f"file://{tmp_path}/secret.png", "/etc/passwd"):  # fmt: skip
        refused(lambda escape=escape: fetch.load(escape, policy, PARAM, SIZE), "forbidden_path")
    refused(lambda: fetch.load("sub/none.png", policy, PARAM, SIZE), "invalid_image")
    refused(lambda: fetch.load("sub/a\0.png", policy, PARAM, SIZE), "forbidden_path")
    (root / "loop").symlink_to(root / "loop")
    refused(lambda: fetch.load("loop/a.png", policy, PARAM, SIZE), "forbidden_path")
    refused(lambda: fetch.load("sub/a.png", ImagePolicy(), PARAM, SIZE), "forbidden_path")


def test_through_the_api(tiny_model_dir: Path, tmp_path: Path, connections) -> None:
    from qwenvl_train.inference.loading import load_for_inference

    (tmp_path / "a.png").write_bytes(png())
    model, tokenizer = load_for_inference(str(tiny_model_dir), device="cpu")

    def ask(url: str, image_url: str) -> httpx.Response:
        content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": "What?"}]
        body = {"messages": [{"role": "user", "content": content}], "max_tokens": 2}
        return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)

    with http_server() as port, running_server(model, tokenizer, allow_local_images=str(tmp_path)) as url:
        picture = f"http://127.0.0.1:{port}/a.png"
        assert ask(url, picture).json()["error"]["code"] == "forbidden_url"
        assert ask(url, "a.png").status_code == 200
        assert ask(url, "../a.png").json()["error"]["code"] == "forbidden_path"
    assert connections == []
    with http_server() as port, running_server(model, tokenizer, allow_private_urls=True) as url:
        response = ask(url, f"http://127.0.0.1:{port}/a.png")
        assert response.status_code == 200, response.text


def test_a_request_s_fetches_are_capped_limited_and_ended_when_it_fails_or_its_client_leaves(
    tiny_model_dir: Path, connections
) -> None:
    from qwenvl_train.inference.loading import load_for_inference

    model, tokenizer = load_for_inference(str(tiny_model_dir), device="cpu")

    def payload(urls: list[str]) -> dict:
        content = [{"type": "image_url", "image_url": {"url": u}} for u in urls] + [
            {"type": "text", "text": "?"}
        ]
        return {"messages": [{"role": "user", "content": content}], "max_tokens": 1}

    options = {"allow_private_urls": True, "max_images": 3, "max_concurrent_fetches": 2}
    with http_server() as port, running_server(model, tokenizer, **options) as url:
        base = f"http://127.0.0.1:{port}"
        api = f"{url}/v1/chat/completions"
        too_many = httpx.post(api, json=payload([f"{base}/a.png?{k}" for k in range(4)]), timeout=30)
        assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "too_many_images"
        # One picture missing: the request fails at once and the download in progress is cut.
        Handler.ended.clear()
        started = time.monotonic()
        failed = httpx.post(
            api, json=payload([f"{base}/missing.png", f"{base}/hang1", f"{base}/hang2"]), timeout=30
        )
        assert failed.status_code == 400 and failed.json()["error"]["code"] == "unreachable_url"
        assert time.monotonic() - started < 1.5
        deadline = time.monotonic() + 2
        while not Handler.ended and time.monotonic() < deadline:
            time.sleep(0.02)
        assert Handler.ended and Handler.ended[0] - started < 1.5
        assert Handler.most_inflight <= 2
        # The client leaves while its pictures download: the downloads are cut.
        Handler.ended.clear()
        host, port_text = url.removeprefix("http://").split(":")
        data = __import__("json").dumps(payload([f"{base}/hang3", f"{base}/hang4"])).encode()
        with socket.create_connection((host, int(port_text)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
            )
            deadline = time.monotonic() + 10
            while Handler.inflight < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert Handler.most_inflight == 2  # two at a time: the limit, reached
            left = time.monotonic()
        deadline = time.monotonic() + 2
        while len(Handler.ended) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(Handler.ended) == 2 and max(Handler.ended) - left < 1.5
