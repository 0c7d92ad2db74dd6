"""``serve --log-requests``: each completed request appended as one OpenAI-format line (pictures stored once by
content hash beside the log, never the API key nor a header), whole lines only, and the round trip
serve -> log -> ``convert --from openai`` -> ``check-data`` -> ``train --max_steps 2``."""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from convert_fixtures import check_data, convert, read_samples, values
from qwenvl_train.outputs import OutputError
from qwenvl_train.serve.request_log import RequestLog
from qwenvl_train.serve.schema import parse_request
from serve_fixtures import png_data_url, running_server
from test_outputs import draining, null_link, unix_socket

KEY = "secret-key-456"


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    from qwenvl_train.inference.loading import load_for_inference

    return load_for_inference(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def logged(loaded, tmp_path_factory) -> Iterator[tuple[Path, Path, list[dict], dict]]:
    """A server logging to ``log/requests.jsonl``; three requests sent (two answered, one refused)."""
    root = tmp_path_factory.mktemp("served")
    pictures = root / "local"
    pictures.mkdir()
    Image.new("RGB", (36, 20), (0, 90, 200)).save(pictures / "blue.png")
    log = root / "log" / "requests.jsonl"
    red = png_data_url(40, 30)
    headers = {"Authorization": f"Bearer {KEY}", "X-Private": "do-not-log"}
    bodies = [
        {
            "model": "tiny",
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": red}}, {"type": "text", "text": "What is it?"}]},
                {"role": "assistant", "content": "A square."},
                {"role": "user", "content": "Which colour?"},
            ],
            "max_tokens": 4,
            "temperature": 0,
        },
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "And this?"}, {"type": "image_url", "image_url": {"url": "blue.png"}}]}],
            "max_tokens": 3,
            "temperature": 0,
            "stream": True,
        },
        {"messages": [{"role": "assistant", "content": "refused: no user message"}]},
    ]  # fmt: skip
    answers = {}
    with running_server(*loaded, api_key=KEY, log_requests=str(log), allow_local_images=str(pictures)) as url:
        first = httpx.post(f"{url}/v1/chat/completions", json=bodies[0], headers=headers, timeout=60)
        answers["plain"] = first.json()
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=bodies[1], headers=headers, timeout=60
        ) as r:
            chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        answers["stream"] = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
        )
        answers["stream_finish"] = (
            chunks[-1]["choices"][0]["finish_reason"] if chunks[-1].get("choices") else None
        )
        assert (
            httpx.post(f"{url}/v1/chat/completions", json=bodies[2], headers=headers, timeout=60).status_code
            == 400
        )
    yield root, log, bodies, answers


def test_each_completed_request_is_one_line(logged) -> None:
    root, log, bodies, answers = logged
    text = log.read_text(encoding="utf-8")
    assert KEY not in text and "do-not-log" not in text and "Bearer" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 2  # the refused request is not logged
    red_bytes = __import__("base64").b64decode(
        bodies[0]["messages"][1]["content"][0]["image_url"]["url"].split(",")[1]
    )
    red = f"requests_images/{hashlib.sha256(red_bytes).hexdigest()}.png"
    blue_bytes = (root / "local" / "blue.png").read_bytes()
    blue = f"requests_images/{hashlib.sha256(blue_bytes).hexdigest()}.png"
    assert (log.parent / red).read_bytes() == red_bytes and (log.parent / blue).read_bytes() == blue_bytes
    plain = answers["plain"]
    assert lines[0] == {
        "id": plain["id"],
        "created": plain["created"],
        "model": "tiny",
        "finish_reason": plain["choices"][0]["finish_reason"],
        "usage": plain["usage"],
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": red}}, {"type": "text", "text": "What is it?"}]},
            {"role": "assistant", "content": "A square."},
            {"role": "user", "content": "Which colour?"},
            {"role": "assistant", "content": plain["choices"][0]["message"]["content"]},
        ],
    }  # fmt: skip
    assert lines[1]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, {"type": "image_url", "image_url": {"url": blue}}]},
        {"role": "assistant", "content": answers["stream"]},
    ]  # fmt: skip
    assert lines[1]["finish_reason"] == answers["stream_finish"] and lines[1]["model"] == "tiny"


def corrected(log: Path, out: Path) -> Path:
    """The log with its answers corrected by hand (what a team does before training on it)."""
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    for line, answer in zip(lines, ("Red.", "A blue block."), strict=True):
        line["messages"][-1]["content"] = answer
    out.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return out


def test_the_log_converts_and_checks(logged, tmp_path, capsys, tiny_model_dir) -> None:
    root, log, _, answers = logged
    out = tmp_path / "o.jsonl"
    code, _, stderr = convert(capsys, "--from", "openai", log, "--out", out)  # the log as it is
    assert code == 0, stderr
    samples = read_samples(out)
    red, blue = (
        next(p for p in samples[i]["conversations"] if "<img>" in p["value"])["value"] for i in (0, 1)
    )
    pics = sorted((log.parent / "requests_images").iterdir())
    assert len(pics) == 2
    assert [s["id"] for s in samples] == [answers["plain"]["id"], read_samples(log)[1]["id"]]
    rel = {p.name: os.path.relpath(p, tmp_path) for p in pics}
    assert values(samples)[1] == [
        ("user", f"And this?Picture 1: <img>{next(v for k, v in rel.items() if k in blue)}</img>\n"),
        ("assistant", answers["stream"]),
    ]
    assert values(samples)[0][:4] == [
        ("system", "Answer briefly."),
        ("user", f"Picture 1: <img>{next(v for k, v in rel.items() if k in red)}</img>\nWhat is it?"),
        ("assistant", "A square."),
        ("user", "Which colour?"),
    ]
    fixed = tmp_path / "fixed.jsonl"
    code, _, stderr = convert(
        capsys, "--from", "openai", corrected(log, log.parent / "fixed.jsonl"), "--out", fixed
    )
    assert code == 0, stderr
    assert [v[-1] for v in values(read_samples(fixed))] == [
        ("assistant", "Red."),
        ("assistant", "A blue block."),
    ]
    assert "samples: 2 read, 2 ok" in check_data(capsys, fixed, tiny_model_dir)


@pytest.mark.slow
def test_the_log_trains_two_steps(logged, tmp_path, capsys, tiny_model_dir) -> None:
    from qwenvl_train.training import train
    from train_fixtures import cpu_args, logged_losses

    _, log, _, _ = logged
    fixed = tmp_path / "fixed.jsonl"
    assert convert(capsys, "--from", "openai", corrected(log, tmp_path / "log.jsonl"), "--image-root", log.parent, "--out", fixed)[0] == 0  # fmt: skip
    trainer = train(cpu_args(tiny_model_dir, fixed, tmp_path / "run", "--tune", "lora", "--max_steps", "2"))
    losses = logged_losses(trainer)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


def test_lines_stay_whole(tmp_path, capsys, monkeypatch) -> None:
    log = RequestLog(tmp_path / "r.jsonl")
    chat = parse_request({"messages": [{"role": "user", "content": "x" * 5000}]})
    threads = [
        threading.Thread(target=lambda: [log.append(chat, "y", id=i) for i in range(20)]) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 80 and all(
        json.loads(line)["messages"][1] == {"role": "assistant", "content": "y"} for line in lines
    )
    size = (tmp_path / "r.jsonl").stat().st_size
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:10]))  # a full disk
    assert log.append(chat, "z", id="cut") is False
    monkeypatch.undo()
    assert (tmp_path / "r.jsonl").stat().st_size == size  # the part written was cut back off
    line = {
        "id": "cut",
        "messages": [{"role": "user", "content": "x" * 5000}, {"role": "assistant", "content": "z"}],
    }
    length = len(json.dumps(line)) + 1
    assert capsys.readouterr().err == f"serve: --log-requests {tmp_path / 'r.jsonl'}: request cut not logged: wrote 10 of {length} bytes\n"  # fmt: skip
    log.close()


def test_a_log_that_cannot_be_opened_stops_before_the_model_loads(tmp_path) -> None:
    from qwenvl_train.commands.serve import open_request_log
    from qwenvl_train.errors import ConfigurationError

    assert open_request_log(None) is None
    with pytest.raises(
        OutputError, match=f"^--log-requests {tmp_path} is a directory, not a file: give a file"
    ):
        open_request_log(str(tmp_path))
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root may write anywhere
        with pytest.raises(ConfigurationError, match="cannot open for appending \\(Permission denied\\)$"):
            open_request_log(str(tmp_path / "ro" / "r.jsonl"))


@pytest.mark.parametrize("target", ["-", "/dev/stdout", "null-link"])
def test_a_log_beside_system_entries_is_refused_in_one_line(tmp_path, target: str) -> None:
    """Its pictures would be stored beside it: never under /dev (nor the standard output)."""
    from qwenvl_train.commands.serve import open_request_log

    path = str(null_link(tmp_path)) if target == "null-link" else target
    with pytest.raises(OutputError, match=f"^--log-requests {path}: the pictures are stored beside the log"):
        open_request_log(path)
    assert not (tmp_path / "out_images").exists()


def test_a_log_into_a_fifo_is_written_through(tmp_path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    chat = parse_request({"messages": [{"role": "user", "content": "hi"}]})
    with draining(fifo) as got:
        log = RequestLog(fifo)
        assert log.append(chat, "yes", id="a") is True
        log.close()
    assert json.loads(got[0])["messages"][1] == {"role": "assistant", "content": "yes"}
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_socket_log_is_one_line(tmp_path) -> None:
    from qwenvl_train.commands.serve import open_request_log

    with unix_socket(tmp_path / "sock") as sock:
        with pytest.raises(OutputError, match=f"^--log-requests {sock} is a socket, not a file"):
            open_request_log(str(sock))
