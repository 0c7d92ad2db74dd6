"""``qwenvl-train convert --from swift`` (ms-swift grounding): <ref-object> and <bbox> filled in order, pixel and
[0, 1] boxes converted with each image's real size (computed by hand below), errors named by record."""

from __future__ import annotations

import json

from convert_fixtures import check_data, convert, picture, read_samples, values, write_jsonl


def test_grounding_records_convert_as_computed_by_hand(tmp_path, capsys, tiny_model_dir) -> None:
    picture(tmp_path / "wide.png", 200, 100)
    picture(tmp_path / "square.png", 400, 400)
    src = write_jsonl(
        tmp_path / "swift.jsonl",
        [
            {
                # Pixel corners on the 200x100 picture: 1000*50/200 = 250, 1000*25/100 = 250, and the right and
                # bottom edges (200, 100) are 1000: clamped to 999.
                "messages": [
                    {"role": "user", "content": "<image>Find <ref-object>"},
                    {"role": "assistant", "content": "<bbox>"},
                ],
                "images": ["wide.png"],
                "objects": {"ref": ["the block"], "bbox": [[50, 25, 200, 100]], "bbox_type": "real"},
            },
            {
                # Two pictures; the second box is on image 1 (400x400): 1000*100/400 = 250, 1000*300/400 = 750,
                # 1000*40/400 = 100. The first, [0, 1] corners: 0.1 -> 100, 0.2 -> 200, 0.35 -> 350, 0.5 -> 500.
                "id": "two",
                "messages": [
                    {"role": "user", "content": "<image><image>Describe with boxes."},
                    {"role": "assistant", "content": "<ref-object><bbox> and <ref-object><bbox>"},
                ],
                "images": [{"path": "wide.png"}, "square.png"],
                "objects": json.dumps(
                    {
                        "ref": ["left", "right"],
                        "bbox": [[0.1, 0.2, 0.35, 0.5], [0.25, 0, 0.75, 0.1]],
                        "bbox_type": "norm1",
                        "image_id": [0, 1],
                    }
                ),
            },
        ],
    )
    out = tmp_path / "o.jsonl"
    code, _, stderr = convert(capsys, "--from", "swift", src, "--out", out)
    assert code == 0, stderr
    assert values(read_samples(out)) == [
        [
            ("user", "Picture 1: <img>wide.png</img>\nFind <ref>the block</ref>"),
            ("assistant", "<box>(250,250),(999,999)</box>"),
        ],
        [
            (
                "user",
                "Picture 1: <img>wide.png</img>\nPicture 2: <img>square.png</img>\nDescribe with boxes.",
            ),
            (
                "assistant",
                "<ref>left</ref><box>(100,200),(350,500)</box> and <ref>right</ref><box>(250,0),(750,100)</box>",
            ),
        ],
    ]
    assert "samples: 2 read, 2 ok" in check_data(capsys, out, tiny_model_dir)


def test_boxes_on_the_second_image_use_its_size_and_untagged_images_open_the_question(
    tmp_path, capsys
) -> None:
    picture(tmp_path / "wide.png", 200, 100)
    picture(tmp_path / "square.png", 400, 400)
    src = write_jsonl(
        tmp_path / "s.jsonl",
        [
            {
                "messages": [  # no <image>: ms-swift puts the pictures first
                    {"role": "system", "content": "Be exact."},
                    {"role": "user", "content": "Where is <ref-object> in picture 2?"},
                    {"role": "assistant", "content": "<bbox>"},
                ],
                "images": ["wide.png", "square.png"],
                # 1000*100/400 = 250, 1000*0/400 = 0, 1000*300/400 = 750, 1000*40/400 = 100.
                "objects": {"ref": ["it"], "bbox": [[100, 0, 300, 40]], "image_id": [1]},
            }
        ],
    )
    assert convert(capsys, "--from", "swift", src, "--out", tmp_path / "o.jsonl")[0] == 0
    assert values(read_samples(tmp_path / "o.jsonl"))[0][1:] == [
        (
            "user",
            "Picture 1: <img>wide.png</img>\nPicture 2: <img>square.png</img>\nWhere is <ref>it</ref> in picture 2?",
        ),
        ("assistant", "<box>(250,0),(750,100)</box>"),
    ]


def test_each_kind_of_error_under_raise_and_skip(tmp_path, capsys) -> None:
    picture(tmp_path / "a.png", 100, 50)
    q = [{"role": "user", "content": "<image>Find <ref-object>"}, {"role": "assistant", "content": "<bbox>"}]

    def rec(bbox, bbox_type="real", image_id=None, refs=("x",)):
        objects = {"ref": list(refs), "bbox": [bbox], "bbox_type": bbox_type}
        if image_id is not None:
            objects["image_id"] = [image_id]
        return {"messages": q, "images": ["a.png"], "objects": objects}

    src = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            rec([10, 10, 20, 20]),
            rec([10, 10, 120, 20]),  # outside the 100x50 image
            rec([30, 10, 20, 20]),  # x2 < x1
            rec([10, 10, 10, 20]),  # zero area
            rec([0.1, 0.1, 0.5, 1.5], "norm1"),
            rec([1, 2, 3, 4], "norm1000"),
            rec([1, 2, 3, 4], image_id=1),
            rec([1, 2, 3, 4], refs=()),
        ],
    )
    out = tmp_path / "o.jsonl"
    code, _, stderr = convert(capsys, "--from", "swift", src, "--out", out)
    assert code == 1 and not out.exists()
    assert stderr.splitlines() == [
        f"error: {src}:2: sample '#1': bbox 0: xyxy box [10, 10, 120, 20]: outside the 100x50 image "
        "(--on-error skip leaves such records out)"
    ]
    code, stdout, stderr = convert(capsys, "--from", "swift", src, "--out", out, "--on-error", "skip")
    assert code == 0 and len(read_samples(out)) == 1
    assert stderr.splitlines() == [
        f"skipped: {src}:2: sample '#1': bbox 0: xyxy box [10, 10, 120, 20]: outside the 100x50 image",
        f"skipped: {src}:3: sample '#2': bbox 0: xyxy box [30, 10, 20, 20]: x2 < x1 (corners the wrong way round)",
        f"skipped: {src}:4: sample '#3': bbox 0: xyxy box [10, 10, 10, 20]: zero area",
        f"skipped: {src}:5: sample '#4': bbox 0: norm1 box [0.1, 0.1, 0.5, 1.5]: outside [0, 1]",
        f"skipped: {src}:6: sample '#5': bbox_type 'norm1000' (expected real or norm1)",
        f"skipped: {src}:7: sample '#6': bbox 0: image_id 1 names no image (1 image(s))",
        f"skipped: {src}:8: sample '#7': 1 <ref-object> placeholder(s) for 0 object(s)",
    ]
    assert stdout.strip().endswith("skipped 7 (6 bad box, 1 placeholder count)")
