"""Inputs that are not plain files, or not plain JSON: every one gets one line naming it, nothing hangs, spins or
reads without bound. Named pipes, devices, the standard input as a stream, gzip and other compressions, URLs of
other schemes, and image servers that trickle or send too much."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

import qwenvl_train.data.images as images_module
from qwenvl_train.data.check import check_data
from qwenvl_train.data.engine import streams
from qwenvl_train.data.engine.records import FileRecords
from qwenvl_train.data.errors import ImageError
from qwenvl_train.data.images import fetch_url, load_image
from qwenvl_train.tokenizer import QwenVLTokenizer

SRC = str(Path(__file__).resolve().parents[1] / "src")
GOOD = {"id": "good", "conversations": [{"from": "user", "value": "hi"}, {"from": "gpt", "value": "yo"}]}


@pytest.fixture(scope="module")
def tok(vocab_file) -> QwenVLTokenizer:
    return QwenVLTokenizer(vocab_file=str(vocab_file))


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail the test instead of hanging (the bugs these tests guard against hang forever)."""

    def expired(*_: object) -> None:
        raise TimeoutError("the test hung")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def run_check(paths, model_dir, tok, **kwargs) -> tuple[int, str]:
    out = io.StringIO()
    code = check_data([str(p) for p in paths], model_dir, out=out, tokenizer=tok, **kwargs)
    return code, out.getvalue()


def conv_with_image(ref: str) -> dict:
    return {
        "id": "a",
        "conversations": [{"from": "user", "value": f"<img>{ref}</img>x"}, {"from": "gpt", "value": "y"}],
    }


# ---------------------------------------------------------------- files that are not regular files
@pytest.mark.parametrize("data_cache", ["auto", "off"])
def test_a_fifo_or_a_device_as_data_is_refused_before_it_is_opened(
    tok, model_dir, tmp_path, deadline, data_cache
):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # nobody writes: opening it would block forever, as the fingerprint once did
    code, report = run_check([fifo, "/dev/zero"], model_dir, tok, data_cache=data_cache)
    assert code == 1
    assert f"{fifo}: is a named pipe (FIFO), not a data file" in report
    assert "/dev/zero: is a character device, not a data file" in report


def test_a_fifo_or_a_device_as_image_is_refused_with_one_line(tok, model_dir, tmp_path, deadline):
    os.mkfifo(tmp_path / "pipe.png")
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(conv_with_image(ref)) for ref in ("pipe.png", "/dev/zero")) + "\n")
    for verify in ("header", "full"):
        code, report = run_check([data], model_dir, tok, verify_images=verify, data_cache="off")
        assert code == 1
        assert f"{tmp_path / 'pipe.png'}: is a named pipe (FIFO), not an image file" in report
        assert "/dev/zero: is a character device, not an image file" in report
    with pytest.raises(ImageError, match="is a named pipe"):
        load_image(str(tmp_path / "pipe.png"))


def test_file_urls_are_an_unsupported_scheme(tok, model_dir, tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    data = tmp_path / "d.json"
    data.write_text(json.dumps([conv_with_image(f"file://{tmp_path}/a.png")]))
    code, report = run_check([data], model_dir, tok, data_cache="off")
    assert code == 1 and f"file://{tmp_path}/a.png: unsupported URL scheme 'file://'" in report


# ---------------------------------------------------------------- the standard input as a stream
def check_data_cli(
    args: list[str], tiny_model_dir: Path, stdin: bytes | None, cache: Path
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "QWENVL_TRAIN_SCAN_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "qwenvl_train", "check-data", *args, "--model", str(tiny_model_dir)],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=120,
    )


def test_stdin_is_read_once_scanned_and_cached_by_its_content(tiny_model_dir, tmp_path):
    lines = [GOOD, {"id": "bad", "conversations": []}]
    data = ("\n".join(json.dumps(x) for x in lines) + "\n").encode()
    first = check_data_cli(["-"], tiny_model_dir, data, tmp_path / "cache")
    out = first.stdout.decode()
    assert first.returncode == 1, first.stderr
    assert (
        "samples: 2 read, 1 ok, 1 with errors" in out
        and "<stdin>:2: sample 'bad': empty conversations" in out
    )
    again = check_data_cli(["/dev/stdin"], tiny_model_dir, data, tmp_path / "cache")
    assert "read the scan from" in again.stdout.decode() and "samples: 2 read, 1 ok" in again.stdout.decode()


def test_a_terminal_as_stdin_is_refused_clearly(monkeypatch):
    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(streams, "_stdin", None)
    streams._spool_stdin(Terminal())
    records = FileRecords(streams.take_streams(["-"])[0])
    assert list(records) == []
    assert [str(e) for e in records.errors] == [
        "<stdin>: is a terminal: pipe the data in (cat data.jsonl | qwenvl-train check-data -) or name the file"
    ]


# ---------------------------------------------------------------- compressed files
@pytest.mark.parametrize("name", ["d.json.gz", "d.jsonl.gz", "gzipped-but-named.jsonl"])
def test_gzip_files_are_read(tok, model_dir, tmp_path, name):
    text = (
        json.dumps([GOOD]) if ".json." in name else json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": "b"})
    )
    (tmp_path / name).write_bytes(gzip.compress(text.encode()))
    code, report = run_check([tmp_path / name], model_dir, tok)
    assert code == 0, report
    assert ("samples: 1 read, 1 ok" if ".json." in name else "samples: 2 read, 2 ok") in report
    assert "note" not in report.lower() or "holds" not in report  # read as what its name says


def test_a_cut_gzip_file_and_other_compressions_get_one_line(tok, model_dir, tmp_path):
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress((json.dumps(GOOD) + "\n").encode() * 1000)[:200])
    (tmp_path / "d.jsonl.xz").write_bytes(b"\xfd7zXZ\x00 not really")
    code, report = run_check([cut, tmp_path / "d.jsonl.xz"], model_dir, tok, data_cache="off")
    assert code == 1
    assert f"{cut}: cannot read: Compressed file ended before the end-of-stream marker was reached" in report
    assert "d.jsonl.xz: compressed .xz files are not read: decompress it first" in report


# ---------------------------------------------------------------- image servers that trickle or send too much
@pytest.fixture
def trickling_server(monkeypatch) -> Iterator[str]:
    """Answers at once with headers, then the body a byte every 0.1 s (/trickle), or too much (/big, /big-chunked);
    each handler stops by itself after a few seconds."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            if self.path == "/big":
                self.send_header("Content-Length", str(10 << 20))
            if self.path == "/trickle":
                self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                if self.path == "/trickle":
                    for _ in range(40):  # 4 s at most
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.1)
                else:
                    for _ in range(40):  # 40 x 64 KiB, or until the client hangs up
                        self.wfile.write(b"x" * (64 << 10))
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_image_timeout_is_a_deadline_for_the_whole_download(trickling_server, deadline):
    start = time.monotonic()
    with pytest.raises(ImageError, match=r"/trickle: timed out after 0\.5 s \(\d+ bytes received\)") as info:
        fetch_url(f"{trickling_server}/trickle", timeout=0.5)
    assert time.monotonic() - start < 1.5  # each byte came well within the socket timeout
    assert info.value.transient


def test_the_size_limit_is_checked_while_reading(trickling_server, deadline, monkeypatch, tmp_path):
    with pytest.raises(ImageError, match=r"/big: larger than 1048576 bytes \(10485760 bytes announced\)"):
        fetch_url(f"{trickling_server}/big", timeout=10, max_bytes=1 << 20)
    with pytest.raises(ImageError, match=r"/big-chunked: larger than 1048576 bytes$") as info:
        fetch_url(f"{trickling_server}/big-chunked", timeout=10, max_bytes=1 << 20)
    assert not info.value.transient
    monkeypatch.setenv("QWENVL_TRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(images_module, "URL_BACKOFF", 0.01)
    with pytest.raises(ImageError, match=r"timed out after 0\.3 s .*\(3 attempts\)"):
        load_image(f"{trickling_server}/trickle", timeout=0.3)
