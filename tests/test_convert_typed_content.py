"""``convert --from sharegpt`` with typed content (LLaMA-Factory v1): text and picture parts in order, the picture
keys LLaMA-Factory and OpenAI-like exports use, ``loss_weight``, and the one-line refusals."""

from __future__ import annotations

import pytest

from convert_fixtures import convert, picture, read_samples, values, write_jsonl


def run(tmp_path, capsys, records):
    src = write_jsonl(tmp_path / "v1.jsonl", records)
    out = tmp_path / "o.jsonl"
    code, _, stderr = convert(capsys, "--from", "sharegpt", src, "--out", out)
    return src, out, code, stderr


def test_parts_in_order_and_loss_weight(tmp_path, capsys) -> None:
    picture(tmp_path / "a.png", 8, 6)
    picture(tmp_path / "b.png", 6, 8)
    records = [
        {
            "messages": [
                {"role": "system", "content": [{"type": "text", "value": "Be brief."}], "loss_weight": 0.0},
                {"role": "user", "content": [{"type": "text", "text": "Left "}, {"type": "image", "image": "a.png"}, {"type": "text", "value": "right"}, {"type": "image_url", "image_url": {"url": "b.png"}}], "loss_weight": 0.0},
                {"role": "assistant", "content": [{"type": "text", "value": "Two."}], "loss_weight": 0.0},
                {"role": "user", "content": "Sure?"},
                {"role": "assistant", "content": [{"type": "text", "value": "Yes."}], "loss_weight": 1.0},
            ]
        }
    ]  # fmt: skip
    _, out, code, stderr = run(tmp_path, capsys, records)
    assert code == 0, stderr
    samples = read_samples(out)
    assert values(samples) == [
        [
            ("system", "Be brief."),
            ("user", "Left Picture 1: <img>a.png</img>\nrightPicture 2: <img>b.png</img>\n"),
            ("assistant", "Two."),
            ("user", "Sure?"),
            ("assistant", "Yes."),
        ]
    ]
    assert [t.get("train") for t in samples[0]["conversations"]] == [None, None, False, None, None]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"messages": [{"role": "user", "content": [{"type": "video", "value": "v.mp4"}]}]}, "turn 0 part 0: a 'video' part: Qwen-VL takes pictures only"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "value": "<image>hi"}]}]}, "turn 0 part 0: <image> in a text part (pictures are image parts here)"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "value": 3}]}]}, "turn 0 part 0: the picture is 3, expected a path"),
        ({"messages": [{"role": "user", "content": [{"type": "audio_clip"}]}]}, "turn 0 part 0: unsupported part type 'audio_clip' (expected text, image_url or image)"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "value": "a.png"}]}], "images": ["a.png"]}, "pictures both in 'images' and in the content parts: name each once"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "text", "value": "b"}], "loss_weight": 0.5}]}, "turn 1: 'loss_weight' is 0.5, expected 0 or 1"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "value": "a"}], "loss_weight": 1.0}, {"role": "assistant", "content": "b"}]}, "turn 0: 'loss_weight' 1.0 on a user turn: only assistant turns are trained"),
    ],
)  # fmt: skip
def test_bad_parts_are_one_line(tmp_path, capsys, record, reason) -> None:
    picture(tmp_path / "a.png", 8, 6)
    src, out, code, stderr = run(tmp_path, capsys, [{"id": "r", **record}])
    assert code == 1
    assert stderr == f"error: {src}:1: sample 'r': {reason} (--on-error skip leaves such records out)\n"
    assert not out.exists()


def test_v1_yaml_entry_must_be_a_local_messages_file(tmp_path, capsys) -> None:
    yaml_file = tmp_path / "d.yaml"
    yaml_file.write_text("a:\n  path: x.jsonl\n  source: hf_hub\nb:\n  path: y.json\n  converter: alpaca\n")
    args = ("--from", "sharegpt", "--dataset-info", yaml_file, "--out", tmp_path / "o.jsonl", "--dataset")
    assert convert(capsys, *args, "a")[2] == f"error: {yaml_file}: dataset 'a' has source 'hf_hub': only local files are read\n"  # fmt: skip
    assert convert(capsys, *args, "b")[2] == f"error: {yaml_file}: dataset 'b' has converter 'alpaca': only the messages layout is read\n"  # fmt: skip
    assert convert(capsys, *args, "c")[2] == f"error: {yaml_file}: no dataset 'c' (it has: a, b)\n"
