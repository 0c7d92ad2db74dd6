"""``qwenvl-train convert --from sharegpt`` (LLaMA-Factory): both layouts, the system column, dataset_info.json's
column and tag names, placeholder counts, and the output through check-data."""

from __future__ import annotations

from convert_fixtures import check_data, convert, picture, read_samples, values, write_json, write_jsonl


def test_messages_and_conversations_layouts(tmp_path, capsys, tiny_model_dir) -> None:
    picture(tmp_path / "a.png", 30, 20)
    picture(tmp_path / "b.jpg", 20, 30)
    src = write_json(
        tmp_path / "data.json",
        [
            {
                "messages": [
                    {"role": "user", "content": "<image><image>Which is taller?"},
                    {"role": "assistant", "content": "The second."},
                ],
                "images": ["a.png", "b.jpg"],
                "system": "Answer in two words.",
            },
            {
                "id": "conv",
                "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
            },
        ],
    )
    out = tmp_path / "o.jsonl"
    code, stdout, stderr = convert(capsys, "--from", "sharegpt", src, "--out", out)
    assert code == 0, stderr
    samples = read_samples(out)
    assert [s["id"] for s in samples] == ["data-0", "conv"]
    assert values(samples) == [
        [
            ("system", "Answer in two words."),
            ("user", "Picture 1: <img>a.png</img>\nPicture 2: <img>b.jpg</img>\nWhich is taller?"),
            ("assistant", "The second."),
        ],
        [("user", "Hi"), ("assistant", "Hello")],
    ]
    assert "samples: 2 read, 2 ok" in check_data(capsys, out, tiny_model_dir)


def test_dataset_info_names_columns_tags_and_the_file(tmp_path, capsys) -> None:
    picture(tmp_path / "media" / "a.png", 8, 8)
    write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {
                "dialog": [{"speaker": "me", "text": "<image>What?"}, {"speaker": "bot", "text": "Grey."}],
                "pics": ["a.png"],
                "sys": "",
            }
        ],
    )
    info = write_json(
        tmp_path / "dataset_info.json",
        {
            "mine": {
                "file_name": "mine.jsonl",
                "formatting": "sharegpt",
                "columns": {"messages": "dialog", "images": "pics", "system": "sys"},
                "tags": {
                    "role_tag": "speaker",
                    "content_tag": "text",
                    "user_tag": "me",
                    "assistant_tag": "bot",
                },
            },
            "other": {"file_name": "x.json"},
        },
    )
    out = tmp_path / "o.jsonl"
    args = ("--from", "sharegpt", "--dataset-info", info, "--image-root", tmp_path / "media", "--out", out)
    code, _, stderr = convert(capsys, *args, "--dataset", "mine")
    assert code == 0, stderr
    assert values(read_samples(out)) == [
        [("user", "Picture 1: <img>media/a.png</img>\nWhat?"), ("assistant", "Grey.")]
    ]

    assert convert(capsys, *args)[2] == f"error: {info}: holds 2 datasets; name one with --dataset\n"
    assert convert(capsys, *args, "--dataset", "other")[2] == (
        f"error: {info}: dataset 'other' has formatting 'alpaca', not 'sharegpt'\n"
    )
    assert (
        convert(capsys, *args, "--dataset", "nah")[2]
        == f"error: {info}: no dataset 'nah' (it has: mine, other)\n"
    )


def test_problems_under_skip(tmp_path, capsys) -> None:
    picture(tmp_path / "a.png", 8, 8)
    msgs = [{"role": "user", "content": "<image>Q"}, {"role": "assistant", "content": "A"}]
    src = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"messages": msgs, "images": ["a.png"]},
            {"messages": msgs, "images": []},
            {"messages": msgs + [{"role": "observation", "content": "x"}], "images": ["a.png"]},
            {"messages": msgs, "images": ["a.png"], "system": 3},
            {"messages": "hi"},
            {"messages": msgs, "images": ["a.png"], "videos": ["v.mp4"]},
        ],
    )
    out = tmp_path / "o.jsonl"
    code, stdout, stderr = convert(capsys, "--from", "sharegpt", src, "--out", out, "--on-error", "skip")
    assert code == 0 and len(read_samples(out)) == 1
    assert stderr.splitlines() == [
        f"skipped: {src}:2: sample '#1': 1 <image> placeholder(s) for 0 image(s)",
        f"skipped: {src}:3: sample '#2': turn 2: unknown role 'observation' (expected assistant, system, user)",
        f"skipped: {src}:4: sample '#3': 'system' is 3, expected a string",
        f"skipped: {src}:5: sample '#4': 'messages' is a string, expected list",
        f"skipped: {src}:6: sample '#5': 'videos': Qwen-VL takes pictures only",
    ]
    assert "read 6 record(s) from 1 file(s); wrote 1 sample(s)" in stdout
