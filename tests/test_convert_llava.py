"""``qwenvl-train convert --from llava``: placeholders become pictures, paths resolve, problems are one line
each under raise and skip, and the output is what check-data reads (and byte-identical when run again)."""

from __future__ import annotations

import json
from pathlib import Path

from convert_fixtures import check_data, convert, picture, read_samples, values, write_json, write_jsonl


def llava_source(tmp_path: Path) -> Path:
    picture(tmp_path / "coco" / "a.jpg", 64, 48)
    picture(tmp_path / "coco" / "sub" / "b.png", 32, 32)
    return write_json(
        tmp_path / "src" / "llava.json",
        [
            {
                "id": "one",
                "image": "a.jpg",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is this?"},
                    {"from": "gpt", "value": "A red square."},
                    {"from": "human", "value": "Sure?"},
                    {"from": "gpt", "value": "Yes."},
                ],
            },
            {
                "image": ["a.jpg", "sub/b.png"],
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "Human", "value": "Compare <image> and\n<image>"},
                    {"from": "gpt", "value": "Same colour."},
                ],
            },
            {"id": 7, "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        ],
    )


def test_llava_converts_and_check_data_reads_it(tmp_path, capsys, tiny_model_dir) -> None:
    src = llava_source(tmp_path)
    out = tmp_path / "out" / "train.jsonl"
    code, stdout, stderr = convert(
        capsys, "--from", "llava", src, "--image-root", tmp_path / "coco", "--out", out
    )
    assert code == 0, stderr
    assert stdout.strip() == f"read 3 record(s) from 1 file(s); wrote 3 sample(s) to {out}; skipped 0"
    samples = read_samples(out)
    assert [s["id"] for s in samples] == ["one", "llava-1", "7"]
    assert values(samples) == [
        [
            ("user", "Picture 1: <img>../coco/a.jpg</img>\nWhat is this?"),
            ("assistant", "A red square."),
            ("user", "Sure?"),
            ("assistant", "Yes."),
        ],
        [
            ("system", "Be brief."),
            (
                "user",
                "Compare Picture 1: <img>../coco/a.jpg</img>\n and\nPicture 2: <img>../coco/sub/b.png</img>\n",
            ),
            ("assistant", "Same colour."),
        ],
        [("user", "Hi"), ("assistant", "Hello")],
    ]
    (tmp_path / "plain").write_text("")  # the output has the mode of any new file (not mkstemp's 0600)
    assert out.stat().st_mode == (tmp_path / "plain").stat().st_mode
    first = out.read_bytes()
    assert convert(capsys, "--from", "llava", src, "--image-root", tmp_path / "coco", "--out", out)[0] == 0
    assert out.read_bytes() == first  # the same input, the same bytes
    assert "samples: 3 read, 3 ok" in check_data(capsys, out, tiny_model_dir)


def test_images_default_to_the_source_folder(tmp_path, capsys) -> None:
    picture(tmp_path / "img" / "a.png", 10, 10)
    src = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "image": "img/a.png",
                "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}],
            }
        ],
    )
    code, _, _ = convert(capsys, "--from", "llava", src, "--out", tmp_path / "o.jsonl")
    assert code == 0
    assert values(read_samples(tmp_path / "o.jsonl"))[0][0] == ("user", "Picture 1: <img>img/a.png</img>\n")


def bad_records() -> list[object]:
    ok = [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]
    return [
        {"id": "good", "image": "a.png", "conversations": ok},
        {"id": "missing", "image": "nope.png", "conversations": ok},
        {"id": "count", "image": ["a.png", "a.png"], "conversations": ok},
        {
            "id": "answer",
            "image": "a.png",
            "conversations": [ok[0] | {"value": "Q"}, ok[1] | {"value": "<image>"}],
        },
        {"id": "role", "conversations": [{"from": "bot", "value": "x"}]},
        {"id": "shape", "image": "a.png"},
        "not an object",
        {"id": "notimage", "image": "text.txt", "conversations": ok},
    ]


def test_each_problem_is_one_line_under_raise_and_counted_under_skip(tmp_path, capsys) -> None:
    picture(tmp_path / "a.png", 20, 10)
    (tmp_path / "text.txt").write_text("hello")
    src = write_jsonl(tmp_path / "bad.jsonl", bad_records())
    (tmp_path / "bad.jsonl").write_text((tmp_path / "bad.jsonl").read_text() + "{not json\n")
    out = tmp_path / "o.jsonl"

    code, stdout, stderr = convert(capsys, "--from", "llava", src, "--out", out)
    assert code == 1 and not out.exists()  # nothing written under raise
    assert (
        stderr
        == f"error: {src}:2: sample 'missing': image {tmp_path / 'nope.png'}: no such file (--on-error skip leaves such records out)\n"
    )

    code, stdout, stderr = convert(capsys, "--from", "llava", src, "--out", out, "--on-error", "skip")
    assert code == 0
    assert [s["id"] for s in read_samples(out)] == ["good"]
    assert stderr.splitlines() == [
        f"skipped: {src}:2: sample 'missing': image {tmp_path / 'nope.png'}: no such file",
        f"skipped: {src}:3: sample 'count': 1 <image> placeholder(s) for 2 image(s)",
        f"skipped: {src}:4: sample 'answer': turn 1: <image> in a 'gpt' turn (images go in user turns)",
        f"skipped: {src}:5: sample 'role': turn 0: unknown role 'bot' (expected gpt, human, system)",
        f"skipped: {src}:6: sample 'shape': missing key 'conversations' (keys: 'id', 'image')",
        f"skipped: {src}:7: sample '#6': record is a string, expected an object",
        f"skipped: {src}:8: sample 'notimage': image {tmp_path / 'text.txt'}: not a recognised image file",
        f"skipped: {src}:9: sample '#8': bad JSON: Expecting property name enclosed in double quotes at column 2",
    ]
    assert stdout.strip() == (
        f"read 9 record(s) from 1 file(s); wrote 1 sample(s) to {out}; skipped 8 (1 bad JSON, 2 bad image, "
        "2 bad structure, 1 placeholder count, 1 placeholder in answer, 1 unknown role)"
    )


def test_source_and_option_problems_are_one_line(tmp_path, capsys) -> None:
    out = tmp_path / "o.jsonl"
    absent = tmp_path / "absent.json"
    assert convert(capsys, "--from", "llava", absent, "--out", out)[2] == f"error: {absent}: no such file\n"
    assert not out.exists()
    code, _, stderr = convert(capsys, "--from", "llava", absent, "--out", out, "--images-out", tmp_path / "i")
    assert stderr == "error: --images-out is for data carrying image bytes (parquet, openai), not llava\n"
    assert convert(capsys, "--from", "sharegpt", absent, "--out", out, "--dataset", "x")[2] == (
        "error: --dataset names an entry of --dataset-info: give that file too\n"
    )
    # Bad JSON in the middle of a JSON list costs the rest of the file: under skip, what came before is written.
    broken = tmp_path / "broken.json"
    good = {"id": "a", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    broken.write_text("[\n" + json.dumps(good) + ",\n{oops}\n]\n")
    code, stdout, stderr = convert(capsys, "--from", "llava", broken, "--out", out, "--on-error", "skip")
    assert code == 0 and [s["id"] for s in read_samples(out)] == ["a"]
    assert stderr.startswith(f"skipped: {broken}:3: bad JSON: ") and stderr.count("\n") == 1
    assert "skipped 1 (1 unreadable source)" in stdout
