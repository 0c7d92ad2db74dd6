"""The training dataset: reading, image loading in __getitem__, truncation counts, error policy, images."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import qwenvl_train.data.dataset as dataset_module
import qwenvl_train.data.images as images_module
from image_fixtures import header_only_png
from qwenvl_train.data import (
    ConversationDataset,
    DataCollator,
    DataValidationError,
    SampleLoadError,
    length_grouped_sampler,
    vision_settings,
)
from qwenvl_train.data.errors import ImageError
from qwenvl_train.data.images import image_tensor, load_image, open_image, to_rgb
from qwenvl_train.tokenizer import QwenVLTokenizer

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo.json"
IMG_START, IMG_END, IMG_PAD = 151857, 151858, 151859
SMALL = {"n_queries": 16, "image_size": 56}


@pytest.fixture(scope="module")
def tok(vocab_file) -> QwenVLTokenizer:
    return QwenVLTokenizer(vocab_file=str(vocab_file))


def write_json(path: Path, samples) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    return path


def write_png(path: Path, color=(200, 10, 10), size=(8, 8), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def conv(*pairs: str) -> list[dict]:
    turns = []
    for i, value in enumerate(pairs):
        turns.append({"from": "user" if i % 2 == 0 else "assistant", "value": value})
    return turns


def check_spans(item: dict, n_queries: int) -> None:
    ids = item["input_ids"].tolist()
    n = 0 if item["pixel_values"] is None else item["pixel_values"].shape[0]
    assert ids.count(IMG_START) == ids.count(IMG_END) == n
    assert ids.count(IMG_PAD) == n * n_queries
    for i, t in enumerate(ids):
        if t == IMG_START:
            assert (
                ids[i + 1 : i + 1 + n_queries] == [IMG_PAD] * n_queries and ids[i + 1 + n_queries] == IMG_END
            )


# ---------------------------------------------------------------- demo data, __getitem__
def test_demo_dataset(tok, caplog):
    with caplog.at_level(logging.INFO, logger="qwenvl_train.data.dataset"):
        ds = ConversationDataset.from_files(DEMO, tok, **SMALL)
    assert len(ds) == 8 and ds.summary.kept == 8 and ds.summary.samples_read == 8
    assert ds.summary.images == 9 and not ds.summary.errors
    assert "8/8 samples kept" in caplog.text
    by_id = {item.id: i for i, item in enumerate(ds.items)}
    text = ds[by_id["text_only"]]
    assert text["pixel_values"] is None and text["input_ids"].dtype == torch.long
    two = ds[by_id["two_images_one_turn"]]
    assert two["pixel_values"].shape == (2, 3, 56, 56) and two["pixel_values"].dtype == torch.float32
    for i in range(len(ds)):
        item = ds[i]
        check_spans(item, 16)
        assert len(item["input_ids"]) == len(item["labels"]) == ds.lengths[i]
        assert (item["labels"] != -100).any()


def test_images_load_in_getitem_not_at_construction(tok, monkeypatch):
    calls = []
    real = dataset_module.image_tensor
    monkeypatch.setattr(dataset_module, "image_tensor", lambda *a, **k: calls.append(a) or real(*a, **k))
    ds = ConversationDataset.from_files(DEMO, tok, **SMALL)
    assert calls == []
    sampler = length_grouped_sampler(ds, batch_size=2, generator=torch.Generator().manual_seed(0))
    assert sorted(sampler) == list(range(len(ds))) and calls == []
    ds[1]
    assert len(calls) == 1


def test_pixel_values_are_the_model_preprocessing(tok, tmp_path):
    red = write_png(tmp_path / "pics" / "red.png", (255, 0, 0), (20, 10))
    data = write_json(
        tmp_path / "d.json", [{"id": "r", "conversations": conv("<img>pics/red.png</img>hi", "ok")}]
    )
    pixels = ConversationDataset.from_files(data, tok, **SMALL)[0]["pixel_values"][0]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    expected = (torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 56, 56) - mean) / std
    torch.testing.assert_close(pixels, expected, atol=1e-5, rtol=0)
    assert red.exists()


def test_relative_paths_resolve_against_the_data_file_folder(tok, tmp_path, monkeypatch):
    write_png(tmp_path / "set" / "img" / "a.png")
    absolute = write_png(tmp_path / "elsewhere" / "b.png")
    data = write_json(
        tmp_path / "set" / "train.json",
        [{"id": "x", "conversations": conv(f"<img>img/a.png</img> and <img>{absolute}</img>", "two")}],
    )
    monkeypatch.chdir(tmp_path / "elsewhere")
    ds = ConversationDataset.from_files(data, tok, **SMALL)
    assert ds.items[0].images == [str(tmp_path / "set" / "img" / "a.png"), str(absolute)]
    assert ds[0]["pixel_values"].shape[0] == 2


def test_nfd_file_names_are_found_as_written(tok, tmp_path):
    name = "\uac00\u1100\u1161.png"  # a Hangul syllable in NFD form, as macOS writes file names
    write_png(tmp_path / name)
    data = write_json(tmp_path / "d.json", [{"id": "k", "conversations": conv(f"<img>{name}</img>", "ok")}])
    assert ConversationDataset.from_files(data, tok, **SMALL)[0]["pixel_values"].shape[0] == 1


def test_jsonl_multiple_files_aliases_and_system_turn(tok, tmp_path):
    lines = [
        {"id": 1, "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
        {
            "id": "s",
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "Human", "value": "a"},
                {"from": "GPT", "value": "b"},
            ],
        },
    ]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    disguised = tmp_path / "b.json"  # JSON Lines under a .json name
    disguised.write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    ds = ConversationDataset.from_files([jsonl, disguised], tok, **SMALL)
    assert [it.id for it in ds.items] == ["1", "s", "1", "s"]
    assert tok.decode(ds[1]["input_ids"][3:6].tolist()) == "Be brief."
    assert ds.lengths[0] != ds.lengths[1]


# ---------------------------------------------------------------- truncation never splits a span
def _span_sample(tmp_path: Path) -> Path:
    write_png(tmp_path / "a.png")
    samples = [
        {"id": "short", "conversations": conv("hi", "hello")},
        {
            "id": "long",
            "conversations": conv(
                "Picture 1: <img>a.png</img>\nWhat?",
                "A red square.",
                "Picture 2: <img>a.png</img>\nAnd now?",
                "Still red.",
            ),
        },
        {"id": "hopeless", "conversations": conv("<img>a.png</img><img>a.png</img> " + "word " * 60, "ok")},
    ]
    return write_json(tmp_path / "d.json", samples)


def _cut_inside_second_span(tok, data: Path) -> tuple[int, int]:
    full = ConversationDataset.from_files(data, tok, **SMALL, model_max_length=10_000)
    long = full.items[1].input_ids.tolist()
    second = [i for i, t in enumerate(long) if t == IMG_START][1]
    first_end = [i + 2 for i, t in enumerate(long) if t == 151645][2]  # after system, user, assistant
    return second + 5, first_end


def test_truncation_drop_counts_and_never_splits(tok, tmp_path, caplog):
    data = _span_sample(tmp_path)
    max_len, _ = _cut_inside_second_span(tok, data)
    with caplog.at_level(logging.WARNING, logger="qwenvl_train.data.dataset"):
        ds = ConversationDataset.from_files(data, tok, **SMALL, model_max_length=max_len)
    assert [it.id for it in ds.items] == ["short"]
    s = ds.summary
    assert (s.too_long, s.dropped_too_long, s.cut, s.kept) == (2, 2, 0, 1)
    assert "2 over max_len" in caplog.text and "2 dropped" in caplog.text


def test_truncation_cut_turns_cuts_at_a_turn_boundary(tok, tmp_path, caplog):
    data = _span_sample(tmp_path)
    max_len, first_end = _cut_inside_second_span(tok, data)
    with caplog.at_level(logging.WARNING, logger="qwenvl_train.data.dataset"):
        ds = ConversationDataset.from_files(
            data, tok, **SMALL, model_max_length=max_len, truncation="cut_turns"
        )
    assert [it.id for it in ds.items] == ["short", "long"]
    s = ds.summary
    assert (s.too_long, s.cut, s.dropped_too_long, s.turns_removed) == (2, 1, 1, 2)
    assert "1 cut" in caplog.text and "1 dropped" in caplog.text
    item = ds[1]
    assert len(item["input_ids"]) == first_end <= max_len
    assert item["input_ids"][-2:].tolist() == [151645, 198]
    check_spans(item, 16)
    assert item["pixel_values"].shape[0] == 1
    assert (item["labels"] != -100).sum() > 0


def test_nothing_left_is_an_error(tok, tmp_path):
    data = write_json(tmp_path / "d.json", [{"id": "x", "conversations": conv("a " * 50, "b")}])
    with pytest.raises(ValueError, match="no training samples left"):
        ConversationDataset.from_files(data, tok, **SMALL, model_max_length=20)


# ---------------------------------------------------------------- error policy
def test_errors_raise_with_every_sample_named_or_skip_when_asked(tok, tmp_path):
    samples = [
        {"id": "good", "conversations": conv("hi", "hello")},
        {"id": "no_answer", "conversations": [{"from": "user", "value": "hi"}]},
        {"id": "bad_box", "conversations": conv("hi", "<ref>x</ref><box>(5,5),(1,1)</box>")},
        {"id": "no_image", "conversations": conv("<img>missing.png</img>hi", "hello")},
    ]
    data = write_json(tmp_path / "d.json", samples)
    with pytest.raises(DataValidationError) as info:
        ConversationDataset.from_files(data, tok, **SMALL)
    text = str(info.value)
    assert "3 error(s)" in text
    assert "sample 'no_answer': no assistant turn" in text
    assert "sample 'bad_box': turn 1: <box>(5,5),(1,1)</box>: inverted" in text
    assert "sample 'no_image': turn 0: " in text and "missing.png: no such file" in text
    ds = ConversationDataset.from_files(data, tok, **SMALL, on_error="skip")
    assert [it.id for it in ds.items] == ["good"]
    assert ds.summary.skipped == 3 and len(ds.summary.errors) == 3 and ds.summary.samples_read == 4


def test_truncated_image_found_by_full_verification_or_at_getitem(tok, tmp_path):
    buf = BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    data = write_json(tmp_path / "d.json", [{"id": "t", "conversations": conv("<img>cut.png</img>x", "y")}])
    ds = ConversationDataset.from_files(data, tok, **SMALL)  # the header is fine
    with pytest.raises(SampleLoadError, match=r"d\.json:1: sample 't': turn 0: .*cut\.png: cannot decode"):
        ds[0]
    with pytest.raises(DataValidationError, match="cannot decode"):
        ConversationDataset.from_files(data, tok, **SMALL, verify_images="full")


# ---------------------------------------------------------------- image loading and RGB conversion
def pixels(image: Image.Image) -> list:
    return [image.getpixel((x, 0)) for x in range(image.width)]


def test_pixels_are_the_originals_convert_rgb(tmp_path):
    """The original Qwen-VL did ``Image.open(path).convert("RGB")``: alpha is dropped (not composited on
    white), a palette's transparent entry keeps its colour, 16-bit values are clipped by Pillow."""
    rgba = Image.new("RGBA", (3, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    rgba.putpixel((2, 0), (200, 100, 50, 128))
    rgba.save(tmp_path / "rgba.png")
    assert pixels(load_image(str(tmp_path / "rgba.png"))) == [(0, 0, 0), (10, 20, 30), (200, 100, 50)]

    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png")
    assert pixels(load_image(str(tmp_path / "pal.png"))) == [(255, 0, 0), (0, 255, 0)]

    deep = Image.fromarray(np.array([[0, 200, 32896, 65535]], dtype=np.uint16))
    assert deep.mode.startswith("I;16")
    deep.save(tmp_path / "deep.png")
    assert pixels(load_image(str(tmp_path / "deep.png"))) == [(0, 0, 0), (200,) * 3, (255,) * 3, (255,) * 3]

    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("LA", (2, 1), (90, 0)).save(tmp_path / "la.png")
    Image.new("1", (2, 1), 1).save(tmp_path / "bits.png")
    for name in ("rgba.png", "pal.png", "deep.png", "cmyk.jpg", "la.png", "bits.png"):
        with Image.open(tmp_path / name) as original:
            expected = original.convert("RGB")
        assert load_image(str(tmp_path / name)).tobytes() == expected.tobytes(), name
    assert pixels(load_image(str(tmp_path / "la.png"))) == [(90, 90, 90)] * 2
    r, g, b = load_image(str(tmp_path / "cmyk.jpg")).getpixel((1, 1))
    assert r > 200 and g < 60 and b < 60
    assert to_rgb(Image.new("F", (1, 1), 0.5)).getpixel((0, 0)) == (0, 0, 0)
    with pytest.raises(ImageError, match="cannot convert mode La to RGB"):
        to_rgb(Image.new("La", (1, 1)))


def test_image_errors(tmp_path, monkeypatch):
    # restored afterwards: a large limit raises Pillow's
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageError, match="is a directory"):
        open_image(str(tmp_path / "folder.png"))
    with pytest.raises(ImageError, match="no such file"):
        open_image(str(tmp_path / "nope.png"))
    with pytest.raises(ImageError, match="not a recognised image"):
        open_image(str(tmp_path / "text.png"))
    # decompression-bomb guard: our limit, PIL's warning (> MAX_IMAGE_PIXELS) and PIL's error (> 2x)
    small = write_png(tmp_path / "small.png", size=(20, 20))
    with pytest.raises(ImageError, match="400 pixels exceeds the limit of 100"):
        open_image(str(small), max_pixels=100)
    for side in (10_000, 100_000):
        bomb = header_only_png(tmp_path / f"bomb{side}.png", side, side)
        with pytest.raises(ImageError, match="decompression bomb"):
            open_image(str(bomb))
    # a larger limit is the limit applied, above Pillow's own default too (the header has no pixels behind it)
    for side in (10_000, 100_000):
        bomb = tmp_path / f"bomb{side}.png"
        with open_image(str(bomb), max_pixels=10**12) as image:
            assert image.size == (side, side)
        with pytest.raises(ImageError, match="cannot decode"):
            load_image(str(bomb), max_pixels=10**12)
        with pytest.raises(ImageError, match="decompression bomb"):
            open_image(str(bomb))  # and the default still refuses it


def test_max_pixels_governs_pillows_own_limit_when_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses > 2000 pixels outright
    image = write_png(tmp_path / "a.png", size=(50, 50))  # 2500 pixels
    assert load_image(str(image), max_pixels=10_000).size == (50, 50)
    assert Image.MAX_IMAGE_PIXELS == 10_000  # raised to the limit asked for ...
    with pytest.raises(ImageError, match="2500 pixels exceeds the limit of 2000"):
        load_image(str(image), max_pixels=2000)
    assert Image.MAX_IMAGE_PIXELS == 10_000  # ... and never lowered (another caller may need it)


@pytest.fixture
def url_cache(tmp_path, monkeypatch) -> Path:
    """Downloads cached in a folder of this test (not the user's cache), retried without waiting long."""
    monkeypatch.setenv("QWENVL_TRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(images_module, "URL_BACKOFF", 0.01)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cache" / "images"


@pytest.fixture
def http_server(url_cache):
    buf = BytesIO()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(buf, "PNG")
    png = buf.getvalue()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path == "/slow.png":
                time.sleep(1.5)
            if self.path in ("/ok.png", "/slow.png"):
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)
            else:
                self.send_error(404, "Not Found")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_http_images(http_server, tok, tmp_path):
    assert load_image(f"{http_server}/ok.png").getpixel((0, 0)) == (0, 0, 255)
    with pytest.raises(ImageError, match="HTTP 404"):
        load_image(f"{http_server}/missing.png")
    with pytest.raises(ImageError, match="timed out after 0.3 s"):
        load_image(f"{http_server}/slow.png", timeout=0.3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(ImageError, match="cannot fetch"):
        load_image(f"http://127.0.0.1:{closed_port}/x.png", timeout=2)
    samples = [
        {"id": "web", "conversations": conv(f"<img>{http_server}/ok.png</img>x", "y")},
        {"id": "gone", "conversations": conv(f"<img>{http_server}/gone.png</img>x", "y")},
    ]
    ds = ConversationDataset.from_files(
        write_json(tmp_path / "d.json", samples), tok, **SMALL
    )  # URLs not fetched yet
    assert ds[0]["pixel_values"].shape == (1, 3, 56, 56)
    with pytest.raises(SampleLoadError, match="sample 'gone': turn 0: .*HTTP 404"):
        ds[1]


# ---------------------------------------------------------------- model settings
def test_vision_settings_sources(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen", "visual": {"image_size": 224}}))
    assert vision_settings(tmp_path) == (256, 224)
    assert vision_settings({"visual": {"n_queries": 16, "image_size": 56}}) == (16, 56)

    class Config:
        visual = {"image_size": 448}

    assert vision_settings(Config()) == (256, 448)


def test_from_model_reads_the_tiny_model(tok, tiny_model_dir):
    ds = ConversationDataset.from_model(DEMO, tok, tiny_model_dir)
    assert (ds.n_queries, ds.image_size) == (16, 56)
    check_spans(ds[1], 16)


# ---------------------------------------------------------------- images that fail after the scan
def test_an_image_failing_after_the_scan_is_replaced_or_stops_training(tok, tmp_path):
    samples = []
    for i in range(3):
        write_png(tmp_path / f"{i}.png", color=(50 * i, 0, 0))
        samples.append({"id": f"s{i}", "conversations": conv(f"<img>{i}.png</img>What?", f"Answer {i}.")})
    data = write_json(tmp_path / "d.json", samples)
    skip = ConversationDataset.from_files(data, tok, **SMALL, on_error="skip")
    stop = ConversationDataset.from_files(data, tok, **SMALL)
    originals = [skip[i] for i in range(3)]
    (tmp_path / "1.png").unlink()  # gone after the scan

    replaced = skip[1]  # replaced by the next sample in dataset order, the same every time
    assert replaced["id"] == "s2" and skip[1]["id"] == "s2"
    assert torch.equal(replaced["input_ids"], originals[2]["input_ids"])
    assert torch.equal(replaced["pixel_values"], originals[2]["pixel_values"])
    assert replaced["replaced"] == f"{data}:1: sample 's1': turn 0: {tmp_path / '1.png'}: no such file"
    assert "replaced" not in skip[0] and "replaced" not in skip[2]
    batch = DataCollator()([skip[i] for i in range(3)])
    assert batch["replaced_samples"] == 1 and batch["input_ids"].shape[0] == 3
    assert "replaced_samples" not in DataCollator()([skip[0], skip[2]])

    with pytest.raises(SampleLoadError) as info:
        stop[1]
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(
        f"{data}:1: sample 's1': turn 0: {tmp_path / '1.png'}: no such file (run `qwenvl-train"
    )
    # raised in a DataLoader worker, it comes back wrapped in a traceback: .line recovers the one line
    loader = DataLoader(stop, batch_size=1, collate_fn=DataCollator(), num_workers=1)
    with pytest.raises(SampleLoadError) as info:
        list(loader)
    assert "Traceback" in str(info.value) and info.value.line == line

    (tmp_path / "2.png").unlink()  # the last sample wraps around to the first
    assert skip[2]["id"] == "s0" and skip[1]["id"] == "s0"
    (tmp_path / "0.png").unlink()
    with pytest.raises(SampleLoadError, match="the 2 sample\\(s\\) after it failed to load too: giving up"):
        skip[0]


@pytest.fixture
def counting_server(url_cache):
    """``/flaky.png`` fails twice with 503 then serves a PNG; ``/down.png`` always 500; ``/gone.png`` 404;
    ``/text.png`` serves text. ``hits`` counts requests per path."""
    buf = BytesIO()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(buf, "PNG")
    png = buf.getvalue()
    hits: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            hits[self.path] = hits.get(self.path, 0) + 1
            if self.path == "/flaky.png" and hits[self.path] <= 2 or self.path == "/down.png":
                self.send_error(503 if self.path == "/flaky.png" else 500, "Try later")
                return
            if self.path == "/gone.png":
                self.send_error(404, "Not Found")
                return
            body = b"not an image" if self.path == "/text.png" else png
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", hits
    server.shutdown()
    server.server_close()


def test_urls_are_retried_then_cached_on_disk(counting_server, url_cache):
    base, hits = counting_server
    assert load_image(f"{base}/flaky.png").getpixel((0, 0)) == (0, 0, 255)
    assert hits["/flaky.png"] == 3  # two transient failures, then the image
    assert [p.name for p in url_cache.iterdir()] == [images_module._cache_path(f"{base}/flaky.png").name]
    assert image_tensor(f"{base}/flaky.png", 8).shape == (3, 8, 8)
    assert hits["/flaky.png"] == 3  # later loads (later epochs) read the cached copy
    with pytest.raises(ImageError, match=r"HTTP 500 Try later \(3 attempts\)$"):
        load_image(f"{base}/down.png")
    assert hits["/down.png"] == 3
    with pytest.raises(ImageError, match=r"HTTP 404 Not Found$"):
        load_image(f"{base}/gone.png")
    assert hits["/gone.png"] == 1  # a permanent failure is not retried
    for expected_hits in (1, 2):  # what is not an image is not kept: fetched again next time
        with pytest.raises(ImageError, match="not a recognised image file"):
            load_image(f"{base}/text.png")
        assert hits["/text.png"] == expected_hits
    assert len(list(url_cache.iterdir())) == 1


def test_an_error_reported_under_an_open_progress_bar_gets_a_line_of_its_own(capsys):
    import sys

    from tqdm import tqdm

    from qwenvl_train.errors import report

    bar = tqdm(total=5, file=sys.stderr)
    bar.update(2)
    report(SampleLoadError("d.json:3: sample 'a': turn 0: x.png: no such file"))
    err = capsys.readouterr().err
    assert err.endswith("\nerror: d.json:3: sample 'a': turn 0: x.png: no such file\n")
