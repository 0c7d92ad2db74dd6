"""``qwenvl-train convert --from parquet``: the TRL (messages + images) and the_cauldron (texts + images) layouts
as Hugging Face writes them, image bytes written once under their content hash, rows read in batches."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from convert_fixtures import check_data, convert, picture, read_samples, values

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def png(width: int, height: int, colour=(10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def image_part() -> dict:
    return {"type": "image", "text": None}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def test_trl_layout_writes_each_image_once(tmp_path, capsys, tiny_model_dir) -> None:
    red, green = png(40, 30, (200, 0, 0)), png(20, 20)
    rows = [
        {
            "messages": [
                {"role": "user", "content": [image_part(), text_part("What colour?")]},
                {"role": "assistant", "content": [text_part("Red.")]},
            ],
            "images": [{"bytes": red, "path": None}],
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [text_part("Compare "), image_part(), text_part(" with "), image_part()],
                },
                {"role": "assistant", "content": [text_part("Different.")]},
            ],
            "images": [{"bytes": red, "path": None}, {"bytes": green, "path": "g.png"}],
        },
        {  # two image items for one image
            "messages": [
                {"role": "user", "content": [image_part(), image_part()]},
                {"role": "assistant", "content": [text_part("x")]},
            ],
            "images": [{"bytes": red, "path": None}],
        },
        {  # bytes that are no image
            "messages": [
                {"role": "user", "content": [image_part()]},
                {"role": "assistant", "content": [text_part("x")]},
            ],
            "images": [{"bytes": b"not a picture", "path": None}],
        },
    ]
    src = tmp_path / "train-00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    out, images = tmp_path / "out" / "data.jsonl", tmp_path / "out" / "images"

    code, _, stderr = convert(capsys, "--from", "parquet", src, "--out", out)
    assert (
        stderr
        == f"error: {src}: sample '#0': this data carries image bytes: give --images-out DIR to write them to\n"
    )
    args = (
        "--from",
        "parquet",
        src,
        "--out",
        out,
        "--images-out",
        images,
        "--batch-size",
        "1",
        "--on-error",
        "skip",
    )
    code, stdout, stderr = convert(capsys, *args)
    assert code == 0, stderr
    red_name, green_name = (
        hashlib.sha256(red).hexdigest() + ".png",
        hashlib.sha256(green).hexdigest() + ".png",
    )
    assert sorted(p.name for p in images.iterdir()) == sorted([red_name, green_name])
    assert values(read_samples(out)) == [
        [("user", f"Picture 1: <img>images/{red_name}</img>\nWhat colour?"), ("assistant", "Red.")],
        [
            (
                "user",
                f"Compare Picture 1: <img>images/{red_name}</img>\n with Picture 2: <img>images/{green_name}</img>\n",
            ),
            ("assistant", "Different."),
        ],
    ]
    digest = hashlib.sha256(b"not a picture").hexdigest()[:12]
    assert stderr.splitlines() == [
        f"skipped: {src}: sample '#2': 2 image item(s) in 'messages' for 1 image(s)",
        f"skipped: {src}: sample '#3': image bytes (sha256 {digest}) are not a recognised image",
    ]
    assert stdout.strip().endswith(
        f"skipped 2 (1 bad image, 1 placeholder count); wrote 2 new image(s) to {images}"
    )
    first = out.read_bytes()
    code, stdout, _ = convert(capsys, *args)
    assert out.read_bytes() == first and stdout.strip().endswith(f"wrote 0 new image(s) to {images}")
    assert "samples: 2 read, 2 ok" in check_data(capsys, out, tiny_model_dir)


def test_cauldron_layout_and_paths(tmp_path, capsys, tiny_model_dir) -> None:
    picture(tmp_path / "pics" / "p.png", 16, 16)
    rows = [
        {
            "images": [{"bytes": png(30, 10), "path": None}, {"bytes": None, "path": "p.png"}],
            "texts": [
                {"user": "Which is wider?", "assistant": "The first.", "source": "x"},
                {"user": "And taller?", "assistant": "Neither.", "source": "x"},
            ],
        }
    ]
    src = tmp_path / "cauldron.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    out = tmp_path / "c.jsonl"
    args = (
        "--from",
        "parquet",
        src,
        "--out",
        out,
        "--images-out",
        tmp_path / "img",
        "--image-root",
        tmp_path / "pics",
    )
    code, _, stderr = convert(capsys, *args)
    assert code == 0, stderr
    (sample,) = values(read_samples(out))
    name = hashlib.sha256(png(30, 10)).hexdigest()
    assert sample == [
        ("user", f"Picture 1: <img>img/{name}.png</img>\nPicture 2: <img>pics/p.png</img>\nWhich is wider?"),
        ("assistant", "The first."),
        ("user", "And taller?"),
        ("assistant", "Neither."),
    ]
    assert "samples: 1 read, 1 ok" in check_data(capsys, out, tiny_model_dir)


def test_unknown_layout_and_not_parquet(tmp_path, capsys) -> None:
    text = tmp_path / "text.parquet"
    text.write_text("hello")
    code, _, stderr = convert(capsys, "--from", "parquet", text, "--out", tmp_path / "o.jsonl")
    assert (
        code == 1
        and stderr.startswith(f"error: {text}: cannot read as parquet (")
        and stderr.count("\n") == 1
    )
    src = tmp_path / "other.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "q", "answer": "a"}]), src)
    code, _, stderr = convert(capsys, "--from", "parquet", src, "--out", tmp_path / "o.jsonl")
    assert code == 1 and stderr == (
        f"error: {src}: unknown layout (columns: answer, question); expected messages + images (TRL) or "
        "texts + images (the_cauldron)\n"
    )
