"""``qwenvl-train convert --from coco`` and ``--from refcoco``: x/y/width/height pixel boxes converted with the
image's real size (computed by hand below), the clamp at the right and bottom edges, questions in turn, each
kind of error, and the output through check-data."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from convert_fixtures import check_data, convert, picture, read_samples, values, write_json, write_jsonl


def instances(tmp_path, annotations=None, images=None):
    picture(tmp_path / "images" / "1.jpg", 640, 480)
    picture(tmp_path / "images" / "2.png", 100, 100)
    return write_json(
        tmp_path / "instances.json",
        {
            "images": images
            or [
                {"id": 1, "file_name": "1.jpg", "width": 640, "height": 480},
                {"id": 2, "file_name": "2.png", "width": 100, "height": 100},
            ],
            "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}],
            "annotations": annotations
            or [
                # x 64, y 48, width 256, height 192 on 640x480: corners 64..320, 48..240 -> 100, 100, 500, 500.
                {"id": 10, "image_id": 1, "category_id": 1, "bbox": [64, 48, 256, 192]},
                # 320 + 320 = 640 and 240 + 240 = 480 are the right and bottom edges: 1000, clamped to 999.
                {"id": 11, "image_id": 1, "category_id": 1, "bbox": [320, 240, 320, 240]},
                # 0..64 -> 0..100; 0..480 -> 0..999.
                {"id": 12, "image_id": 1, "category_id": 2, "bbox": [0, 0, 64, 480]},
                # On 100x100: 10..40 -> 100..400, 20..60 -> 200..600.
                {"id": 13, "image_id": 2, "category_id": 2, "bbox": [10, 20, 30, 40]},
            ],
        },
    )


def test_coco_one_conversation_per_image_and_category(tmp_path, capsys, tiny_model_dir) -> None:
    src = instances(tmp_path)
    out = tmp_path / "out" / "coco.jsonl"
    code, stdout, stderr = convert(
        capsys, "--from", "coco", src, "--image-root", tmp_path / "images", "--out", out
    )
    assert code == 0, stderr
    samples = read_samples(out)
    assert [s["id"] for s in samples] == ["coco-1-1", "coco-1-2", "coco-2-2"]
    assert values(samples) == [
        [
            ("user", "Picture 1: <img>../images/1.jpg</img>\nWhere is the dog in the picture?"),
            ("assistant", "<ref>dog</ref><box>(100,100),(500,500)</box><box>(500,500),(999,999)</box>"),
        ],
        [
            ("user", "Picture 1: <img>../images/1.jpg</img>\n图中的cat在哪里？"),
            ("assistant", "<ref>cat</ref><box>(0,0),(100,999)</box>"),
        ],
        [
            ("user", "Picture 1: <img>../images/2.png</img>\nWhere is the cat in the picture?"),
            ("assistant", "<ref>cat</ref><box>(100,200),(400,600)</box>"),
        ],
    ]
    assert "samples: 3 read, 3 ok" in check_data(capsys, out, tiny_model_dir)

    code, _, _ = convert(capsys, "--from", "coco", src, "--image-root", tmp_path / "images", "--out", out,
                         "--question", "Find {ref}.", "--lang", "en")  # fmt: skip
    assert code == 0 and [v[0][1].split("\n")[1] for v in values(read_samples(out))] == [
        "Find dog.",
        "Find cat.",
        "Find cat.",
    ]
    code, _, stderr = convert(capsys, "--from", "coco", src, "--out", out, "--question", "Where?")
    assert stderr == "error: --question 'Where?' has no {ref} where the object's name goes\n"


def test_coco_errors_name_the_annotation_or_the_image(tmp_path, capsys) -> None:
    src = instances(
        tmp_path,
        annotations=[
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [600, 48, 64, 10]},  # 600 + 64 > 640
            {"id": 11, "image_id": 9, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 12, "image_id": 2, "category_id": 2, "bbox": [1, 1, 2, 2]},
        ],
        images=[
            {"id": 1, "file_name": "1.jpg", "width": 640, "height": 480},
            {"id": 2, "file_name": "2.png", "width": 50, "height": 100},  # the header says 100x100
        ],
    )
    out = tmp_path / "o.jsonl"
    code, stdout, stderr = convert(
        capsys, "--from", "coco", src, "--image-root", tmp_path / "images", "--out", out, "--on-error", "skip"
    )
    assert code == 0 and read_samples(out) == []
    root = tmp_path / "images"
    assert stderr.splitlines() == [
        f"skipped: {src}: sample 'annotations[1]': annotations[1]: image_id 9 is not in 'images'",
        f"skipped: {src}: sample 'coco-1-1': annotation 10: xywh box [600, 48, 64, 10]: outside the 640x480 image",
        f"skipped: {src}: sample 'coco-2-2': image 2.png: the annotations say 50x100, its header 100x100",
    ]
    assert stdout.startswith(f"read 3 record(s) from 1 file(s); wrote 0 sample(s) to {out}; skipped 3")
    assert root.is_dir()


def test_refcoco_refs_with_instances_one_conversation_per_expression(
    tmp_path, capsys, tiny_model_dir
) -> None:
    coco = instances(tmp_path)
    refs = write_json(
        tmp_path / "refs.json",
        [
            {"ref_id": 5, "ann_id": 11, "image_id": 1, "split": "val",
             "sentences": [{"sent": "dog on the right"}, {"sent": "lower dog", "raw": "Lower dog."}]},
            {"ref_id": 6, "ann_id": 13, "image_id": 2, "split": "train", "sentences": [{"sent": "the cat"}]},
            {"ref_id": 7, "ann_id": 99, "image_id": 2, "split": "val", "sentences": [{"sent": "ghost"}]},
        ],
    )  # fmt: skip
    out = tmp_path / "ref.jsonl"
    args = ("--from", "refcoco", refs, "--instances", coco, "--image-root", tmp_path / "images", "--out", out)
    code, stdout, stderr = convert(capsys, *args, "--split", "val", "--lang", "en", "--on-error", "skip")
    assert code == 0
    assert values(read_samples(out)) == [
        [
            ("user", "Picture 1: <img>images/1.jpg</img>\nWhere is the dog on the right in the picture?"),
            ("assistant", "<ref>dog on the right</ref><box>(500,500),(999,999)</box>"),
        ],
        [
            ("user", "Picture 1: <img>images/1.jpg</img>\nWhere is the lower dog in the picture?"),
            ("assistant", "<ref>lower dog</ref><box>(500,500),(999,999)</box>"),
        ],
    ]
    assert [s["id"] for s in read_samples(out)] == ["ref5-0", "ref5-1"]
    line = next(
        n for n, text in enumerate(refs.read_text().splitlines()) if '"ref_id": 7' in text
    )  # after "{"
    assert stderr == f"skipped: {refs}:{line}: sample 'ref7': ann_id 99 is not in --instances\n"
    assert stdout.strip() == (
        f"read 3 record(s) from 1 file(s); wrote 2 sample(s) to {out}; skipped 1 (1 bad structure); "
        "left out 1 not in split 'val'"
    )
    assert "samples: 2 read, 2 ok" in check_data(capsys, out, tiny_model_dir)


def test_refcoco_exports_with_xywh_boxes(tmp_path, capsys) -> None:
    picture(tmp_path / "a.png", 200, 100)
    src = write_jsonl(
        tmp_path / "export.jsonl",
        [
            # 1000 * 20 / 200 = 100, 1000 * 10 / 100 = 100, (20 + 180) = 200 -> 999, (10 + 40) = 50 -> 500.
            {"file_name": "a.png", "bbox": [20, 10, 180, 40], "sentences": ["the bar"]},
            {"image": "a.png", "bbox": [20, 10, 0, 40], "expression": "flat"},
            {"image": "a.png", "bbox": [20, 10, 5, 5]},
        ],
    )
    out = tmp_path / "o.jsonl"
    code, _, stderr = convert(
        capsys, "--from", "refcoco", src, "--out", out, "--lang", "zh", "--on-error", "skip"
    )
    assert code == 0
    assert values(read_samples(out)) == [
        [
            ("user", "Picture 1: <img>a.png</img>\n图中的the bar在哪里？"),
            ("assistant", "<ref>the bar</ref><box>(100,100),(999,500)</box>"),
        ]
    ]
    assert stderr.splitlines() == [
        f"skipped: {src}:2: sample '#1': xywh box [20, 10, 0, 40]: zero area",
        f"skipped: {src}:3: sample '#2': no referring expression ('sentences', 'sentence' or 'expression')",
    ]


def test_refcoco_parquet_export_with_image_bytes(tmp_path, capsys, tiny_model_dir) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    buffer = io.BytesIO()
    Image.new("RGB", (50, 40), (9, 9, 9)).save(buffer, format="PNG")
    data = buffer.getvalue()
    rows = [
        # On 50x40: 1000 * 5 / 50 = 100, 1000 * 4 / 40 = 100, 5 + 45 = 50 -> 999, 4 + 16 = 20 -> 500.
        {"image": {"bytes": data, "path": None}, "bbox": [5.0, 4.0, 45.0, 16.0], "sentences": ["top band"],
         "segmentation": [[1.0, 2.0]]},
        {"image": {"bytes": data, "path": None}, "bbox": [5.0, 4.0, 46.0, 16.0], "sentences": ["too wide"],
         "segmentation": [[1.0, 2.0]]},
    ]  # fmt: skip
    src = tmp_path / "refcoco-val.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    out = tmp_path / "o.jsonl"
    args = ("--from", "refcoco", src, "--out", out, "--lang", "en", "--on-error", "skip")
    assert (
        convert(capsys, *args)[2]
        == f"error: {src}: sample '#0': this data carries image bytes: give --images-out DIR to write them to\n"
    )
    code, stdout, stderr = convert(capsys, *args, "--images-out", tmp_path / "img")
    assert code == 0, stderr
    name = hashlib.sha256(data).hexdigest()
    assert values(read_samples(out)) == [
        [
            ("user", f"Picture 1: <img>img/{name}.png</img>\nWhere is the top band in the picture?"),
            ("assistant", "<ref>top band</ref><box>(100,100),(999,500)</box>"),
        ]
    ]
    assert (
        stderr == f"skipped: {src}: sample '#1': xywh box [5.0, 4.0, 46.0, 16.0]: outside the 50x40 image\n"
    )
    assert stdout.strip().endswith(f"skipped 1 (1 bad box); wrote 1 new image(s) to {tmp_path / 'img'}")
    assert "samples: 1 read, 1 ok" in check_data(capsys, out, tiny_model_dir)
