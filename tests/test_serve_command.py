"""The ``qwenvl-train serve`` command itself: it prints the URLs of the API and the page, serves, and Ctrl-C
(SIGINT) stops it cleanly with exit status 0; a bad option is one line and status 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from serve_fixtures import free_port

ROOT = Path(__file__).resolve().parents[1]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "qwenvl_train", "serve", *args]


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))


def test_serve_prints_its_urls_serves_and_stops_on_ctrl_c(tiny_model_dir: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        command("--model", str(tiny_model_dir), "--port", str(port), "--name", "tiny"),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the server did not answer within 60 s"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert (
            httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30).status_code
            == 200
        )
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    url = f"http://127.0.0.1:{port}"
    assert f"API {url}/v1" in stdout and f"chat page {url}/" in stdout
    assert "Traceback" not in stderr


def test_bad_local_images_folder_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        command("--model", str(tiny_model_dir), "--allow-local-images", str(tmp_path / "none")),
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: --allow-local-images")


def start_server(tiny_model_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        command("--model", str(tiny_model_dir), "--port", str(port), "--name", "tiny", *extra),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the server did not answer within 60 s"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)


def test_sigterm_lets_streams_run_then_ends_them_with_an_error_event_and_done(tiny_model_dir: Path) -> None:
    """Two streams in flight at SIGTERM: they go on for --shutdown-timeout, then each gets the shutdown error
    event and [DONE]; new connections are refused meanwhile; the process exits 0 with no traceback."""
    import json
    import threading

    shutdown_s = 1.5
    process, url = start_server(tiny_model_dir, "--shutdown-timeout", str(shutdown_s))
    body = {
        "messages": [{"role": "user", "content": "Tell me a long story"}],
        "max_tokens": 100_000,
        "stream": True,
    }
    lines: list[list[tuple[float, str]]] = [[], []]
    started = [threading.Event(), threading.Event()]

    def read(k: int) -> None:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
            for line in response.iter_lines():
                if line:
                    lines[k].append((time.monotonic(), line))
                    if '"content":"' in line and '"content":""' not in line:
                        started[k].set()

    try:
        readers = [threading.Thread(target=read, args=(k,)) for k in range(2)]
        for reader in readers:
            reader.start()
        assert all(event.wait(30) for event in started)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            httpx.get(f"{url}/health", timeout=2)
            refused = False
        except httpx.ConnectError:
            refused = True
        for reader in readers:
            reader.join(30)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert refused, "a new connection was accepted while shutting down"
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    for received in lines:
        (_, last), (end, error) = received[-1], received[-2]
        assert last == "data: [DONE]"
        assert json.loads(error[6:])["error"]["code"] == "server_shutting_down"
        assert end - signalled >= shutdown_s  # the answers went on for the whole grace period
        assert any(t > signalled + 0.5 and '"content":"' in line for t, line in received)
