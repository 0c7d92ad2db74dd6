"""Who may reach a server from a browser: a key-less server answers only loopback ``Host`` names (and those
``--allowed-hosts`` lists), cross-site POSTs are refused whatever their content type, the page carries its CSP,
``nosniff`` and frame protection, the key may come from the environment, and a public ``--host`` without a key
is warned about."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve_fixtures import running_server

HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    from qwenvl_train.inference.loading import load_for_inference

    return load_for_inference(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def keyless(loaded) -> Iterator[str]:
    with running_server(*loaded, allowed_hosts="pictures.lan") as url:
        yield url


def post(url: str, headers: dict[str, str], content: bytes | None = None) -> httpx.Response:
    if content is None:
        return httpx.post(f"{url}/v1/chat/completions", json=HELLO, headers=headers, timeout=30)
    return httpx.post(f"{url}/v1/chat/completions", content=content, headers=headers, timeout=30)


def test_a_keyless_server_answers_only_loopback_and_listed_names(keyless: str) -> None:
    port = keyless.rsplit(":", 1)[1]
    for name in (
        f"127.0.0.1:{port}",
        f"localhost:{port}",
        f"[::1]:{port}",
        "pictures.lan",
        "PICTURES.LAN:80",
    ):
        assert post(keyless, {"host": name}).status_code == 200, name
    for name in ("rebound.attacker.example", f"rebound.attacker.example:{port}", "pictures.lan.evil"):
        response = post(keyless, {"host": name})
        assert response.status_code == 403, name
        assert response.json()["error"]["code"] == "host_not_allowed"
        assert httpx.get(f"{keyless}/health", headers={"host": name}, timeout=5).status_code == 403


def test_cross_site_posts_are_refused(keyless: str) -> None:
    simple = post(
        keyless, {"origin": "https://evil.example", "content-type": "text/plain"}, b'{"messages": []}'
    )
    assert simple.status_code == 403 and simple.json()["error"]["code"] == "cross_origin"
    assert post(keyless, {"origin": "null"}).status_code == 403
    assert post(keyless, {"origin": keyless}).status_code == 200  # the page itself
    assert post(keyless, {}).status_code == 200  # clients outside a browser send no Origin


def test_the_page_sends_its_security_headers(keyless: str) -> None:
    for path in ("/", "/static/chat.js"):
        response = httpx.get(f"{keyless}{path}", timeout=10)
        assert response.status_code == 200
        assert response.headers["x-content-type-options"] == "nosniff"
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy


def test_a_keyed_server_answers_any_name_and_takes_the_key_from_the_environment(loaded, monkeypatch) -> None:
    monkeypatch.setenv("QWENVL_TRAIN_API_KEY", "from-env")
    with running_server(*loaded) as url:
        assert post(url, {"host": "models.example"}).status_code == 401
        ok = post(url, {"host": "models.example", "authorization": "Bearer from-env"})
        assert ok.status_code == 200


def test_a_public_host_without_a_key_is_warned_about() -> None:
    from qwenvl_train.commands.serve import exposure_warning

    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("::1", None) is None
    assert exposure_warning("0.0.0.0", "k") is None
    warning = exposure_warning("0.0.0.0", None)
    assert warning is not None and warning.startswith("warning: --host 0.0.0.0 without an API key")


def test_same_origin_rules() -> None:
    from qwenvl_train.serve.hosts import same_origin

    assert same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert same_origin("https://chat.example", "chat.example")  # behind a proxy that ends TLS
    assert same_origin("https://chat.example", "chat.example:443")
    assert not same_origin("http://127.0.0.1:8001", "127.0.0.1:8000")
    assert not same_origin("https://evil.example", "chat.example")
    assert not same_origin("null", "chat.example")
