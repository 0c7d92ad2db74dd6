"""``qwenvl-train convert --from openai``: string and typed content, picture numbering and placement, data URLs
written once by hash, http(s) URLs kept or fetched (``--download``, through serve's guarded fetcher), paths,
``weight``, consecutive user messages, the one-line errors naming file:line and record, and the output through
check-data."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import threading

import pytest
from PIL import Image

from convert_fixtures import check_data, convert, picture, read_samples, values, write_json, write_jsonl


def png(width: int, height: int, colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


def image_part(url: str, **extra: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def test_parts_pictures_weights_and_system(tmp_path, capsys, tiny_model_dir) -> None:
    picture(tmp_path / "media" / "local.png", 32, 24)
    red = png(40, 30, (200, 10, 30))
    digest = hashlib.sha256(red).hexdigest()
    src = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "id": "cheese",
                "messages": [
                    {"role": "system", "content": "You identify cheeses."},
                    {"role": "user", "content": "What is this cheese?"},
                    {"role": "user", "content": [image_part(data_url(red), detail="low")]},
                    {"role": "assistant", "content": "Danbo"},
                ],
            },
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Compare "},
                            image_part("media/local.png"),
                            {"type": "text", "text": "with"},
                            image_part(data_url(red)),
                        ],
                    },
                    {"role": "assistant", "content": "The same.", "weight": 0},
                    {"role": "user", "content": "Sure?"},
                    {"role": "assistant", "content": [{"type": "text", "text": "Yes"}], "weight": 1},
                ],
                "model": "ignored",
            },
        ],
    )
    out = tmp_path / "out" / "o.jsonl"
    code, stdout, stderr = convert(
        capsys, "--from", "openai", src, "--out", out, "--images-out", tmp_path / "out" / "img"
    )
    assert code == 0, stderr
    assert stdout.endswith("wrote 1 new image(s) to " + str(tmp_path / "out" / "img") + "\n")
    stored = f"img/{digest}.png"
    assert (tmp_path / "out" / stored).read_bytes() == red
    samples = read_samples(out)
    assert [s["id"] for s in samples] == ["cheese", "chat-1"]
    assert values(samples) == [
        [
            ("system", "You identify cheeses."),
            ("user", f"What is this cheese?\nPicture 1: <img>{stored}</img>\n"),
            ("assistant", "Danbo"),
        ],
        [
            (
                "user",
                f"Compare Picture 1: <img>../media/local.png</img>\nwithPicture 2: <img>{stored}</img>\n",
            ),
            ("assistant", "The same."),
            ("user", "Sure?"),
            ("assistant", "Yes"),
        ],
    ]
    assert [t.get("train") for t in samples[1]["conversations"]] == [None, False, None, None]
    assert "samples: 2 read, 2 ok" in check_data(capsys, out, tiny_model_dir)


def test_http_urls_are_kept_and_developer_is_the_system_turn(tmp_path, capsys) -> None:
    src = write_json(
        tmp_path / "chat.json",
        [
            {
                "messages": [
                    {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                    {
                        "role": "user",
                        "content": [image_part("https://example.com/a.jpg"), {"type": "text", "text": "Hi"}],
                    },
                    {"role": "assistant", "content": "Hello"},
                ]
            }
        ],
    )
    out = tmp_path / "o.jsonl"
    code, _, stderr = convert(capsys, "--from", "openai", src, "--out", out)
    assert code == 0, stderr
    assert values(read_samples(out)) == [
        [
            ("system", "Be brief."),
            ("user", "Picture 1: <img>https://example.com/a.jpg</img>\nHi"),
            ("assistant", "Hello"),
        ]
    ]


@pytest.mark.parametrize(
    ("messages", "extra", "reason"),
    [
        ([{"role": "tool", "content": "x"}], {}, "message 0: role 'tool' is not supported (expected system, user or assistant)"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0.5}], {}, "message 1: 'weight' is 0.5, expected 0 or 1"),
        ([{"role": "user", "content": "a", "weight": 0}], {}, "message 0: 'weight' on a user message (only assistant messages are trained)"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": [image_part("x.png")]}], {}, "message 1 part 0: a picture outside a user message"),
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], {}, "message 0 part 0: a 'input_audio' part: Qwen-VL takes pictures only"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}], {}, "message 1: tool calls have no turns in Qwen-VL's format"),
        ([{"role": "user", "content": "a"}], {"tools": [{"type": "function"}]}, "'tools': tool and function calling have no turns in Qwen-VL's format"),
        ([{"role": "user", "content": [image_part("data:text/plain;base64,aGk=")]}], {}, "message 0 part 0: the data URL holds 'text/plain', not an image"),
        ([{"role": "user", "content": [image_part("data:image/png;base64,!!")]}], {}, "message 0 part 0: the data URL is not valid base64"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], {}, "message 1: a system message is only allowed first"),
    ],
)  # fmt: skip
def test_bad_records_are_one_line_naming_file_line_and_record(
    tmp_path, capsys, messages, extra, reason
) -> None:
    src = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "ok"}]},
            {"id": "r2", "messages": messages, **extra},
        ],
    )
    out = tmp_path / "o.jsonl"
    code, _, stderr = convert(capsys, "--from", "openai", src, "--out", out, "--images-out", tmp_path / "img")
    assert code == 1
    assert stderr == f"error: {src}:2: sample 'r2': {reason} (--on-error skip leaves such records out)\n"
    assert not out.exists()


def test_data_urls_need_images_out_and_download_needs_it_too(tmp_path, capsys) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": [image_part(data_url(png(4, 4)))]}, {"role": "assistant", "content": "x"}]}])  # fmt: skip
    code, _, stderr = convert(capsys, "--from", "openai", src, "--out", tmp_path / "o.jsonl")
    assert (code, stderr) == (
        1,
        f"error: {src}:1: sample '#0': this data carries image bytes: give --images-out DIR to write them to\n",
    )
    code, _, stderr = convert(capsys, "--from", "openai", src, "--out", tmp_path / "o.jsonl", "--download")
    assert (code, stderr) == (
        1,
        "error: --download writes the pictures it fetches: give --images-out DIR too\n",
    )
    code, _, stderr = convert(capsys, "--from", "llava", src, "--out", tmp_path / "o.jsonl", "--download")
    assert (code, stderr) == (1, "error: --download is for --from openai, not llava\n")


class _Pictures(http.server.BaseHTTPRequestHandler):
    body = png(20, 10)

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        if self.path != "/cat.png":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


def test_download_fetches_once_through_the_guarded_fetcher(tmp_path, capsys, monkeypatch) -> None:
    from qwenvl_train.serve import fetch as fetcher

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pictures)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # pictures.example resolves to a public address (no real lookup); the connection goes to the local server
    monkeypatch.setattr(
        fetcher, "resolve", lambda host, p: ["93.184.216.34"] if host == "pictures.example" else ["127.0.0.1"]
    )
    monkeypatch.setattr(
        fetcher,
        "connect",
        lambda address, p, timeout: fetcher.socket.create_connection(("127.0.0.1", port), timeout),
    )
    try:
        url = f"http://pictures.example:{port}/cat.png"
        src = write_jsonl(
            tmp_path / "c.jsonl",
            [{"messages": [{"role": "user", "content": [image_part(url)]}, {"role": "assistant", "content": "A cat."}]}] * 2
            + [{"id": "private", "messages": [{"role": "user", "content": [image_part(f"http://localhost:{port}/cat.png")]}, {"role": "assistant", "content": "x"}]}],
        )  # fmt: skip
        out = tmp_path / "o.jsonl"
        args = ("--from", "openai", src, "--out", out, "--images-out", tmp_path / "img", "--download")
        code, stdout, stderr = convert(capsys, *args, "--on-error", "skip")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0
    name = hashlib.sha256(_Pictures.body).hexdigest() + ".png"
    assert (
        values(read_samples(out))
        == [[("user", f"Picture 1: <img>img/{name}</img>\n"), ("assistant", "A cat.")]] * 2
    )
    assert (tmp_path / "img" / name).read_bytes() == _Pictures.body
    assert stderr == (
        f"skipped: {src}:3: sample 'private': cannot download: 'localhost' resolves to the non-public address "
        "127.0.0.1: refused (--download fetches from public addresses only: copy the picture and give its path)\n"
    )
    assert "skipped 1 (1 download failed)" in stdout and "wrote 1 new image(s)" in stdout
