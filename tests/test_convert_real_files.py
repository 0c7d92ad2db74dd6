"""Real files nobody here wrote (``tests/data/README.md``): LLaMA-Factory's ``mllm_demo.json`` (with its
``dataset_info.json`` entry) and ``v1_multimodal_demo.jsonl`` (typed content, with and without its ``.yaml``
entry), and a file in OpenAI's vision fine-tuning format, each converted with its pictures at their exact places,
checked by ``check-data``, and (slow) trained two steps."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from convert_fixtures import check_data, convert, read_samples, values

DATA = Path(__file__).parent / "data"
LF = DATA / "llamafactory"
ACCOMPLISHED = (
    "He was appointed to be a payload specialist on Shenzhou 16 mission in June 2022, thus becoming the first Chinese "
    "civilian of Group 3 in space on 30 May 2023. He is responsible for the on-orbit operation of space science "
    "experimental payloads."
)


def converted(tmp_path: Path, capsys, name: str, *args) -> Path:
    out = tmp_path / f"{name}.jsonl"
    code, _, stderr = convert(capsys, *args, "--out", out)
    assert code == 0, stderr
    return out


def llamafactory_expected(out: Path) -> list[list[tuple[str, str]]]:
    """The three demo conversations, the pictures named relative to ``out``'s folder."""
    pic = {i: os.path.relpath(LF / "data" / "mllm_demo_data" / f"{i}.jpg", out.parent) for i in (1, 2, 3)}
    return [
        [
            ("user", f"Picture 1: <img>{pic[1]}</img>\nWho are they?"),
            ("assistant", "They're Kane and Gretzka from Bayern Munich."),
            ("user", f"What are they doing?Picture 2: <img>{pic[1]}</img>\n"),
            ("assistant", "They are celebrating on the soccer field."),
        ],
        [
            ("user", f"Picture 1: <img>{pic[2]}</img>\nWho is he?"),
            ("assistant", "He's Thomas Muller from Bayern Munich."),
            ("user", "Why is he on the ground?"),
            ("assistant", "Because he's sliding on his knees to celebrate."),
        ],
        [
            ("user", f"Picture 1: <img>{pic[3]}</img>\nPlease describe this image"),
            ("assistant", "Chinese astronaut Gui Haichao is giving a speech."),
            ("user", "What has he accomplished?"),
            ("assistant", ACCOMPLISHED),
        ],
    ]


def test_llamafactory_demo_files_convert_alike_and_check(
    tmp_path, capsys, tiny_model_dir, monkeypatch
) -> None:
    mllm = converted(tmp_path, capsys, "mllm", "--from", "sharegpt", "--dataset-info", LF / "data" / "dataset_info.json", "--dataset", "mllm_demo")  # fmt: skip
    v1 = converted(tmp_path, capsys, "v1", "--from", "sharegpt", LF / "data" / "v1_multimodal_demo.jsonl", "--image-root", LF)  # fmt: skip
    monkeypatch.chdir(LF)  # LLaMA-Factory reads a v1 yaml's path from the repository's root
    v1_yaml = converted(tmp_path, capsys, "v1_yaml", "--from", "sharegpt", "--dataset-info", "data/v1_multimodal_demo.yaml", "--image-root", ".")  # fmt: skip
    expected = llamafactory_expected(mllm)
    assert values(read_samples(mllm)) == values(read_samples(v1)) == expected
    assert v1_yaml.read_bytes() == v1.read_bytes()
    for out in (mllm, v1):
        assert "samples: 3 read, 3 ok" in check_data(capsys, out, tiny_model_dir)


def test_openai_vision_file_converts_and_checks(tmp_path, capsys, tiny_model_dir) -> None:
    out = converted(tmp_path, capsys, "openai", "--from", "openai", DATA / "openai" / "vision_finetune.jsonl", "--images-out", tmp_path / "img")  # fmt: skip
    samples = read_samples(out)
    cheese, city = sorted(p.name for p in (tmp_path / "img").iterdir())
    if not cheese.endswith(".jpg"):
        cheese, city = city, cheese
    assert values(samples) == [
        [
            ("system", "You are an assistant that identifies uncommon cheeses."),
            ("user", f"What is this cheese?\nPicture 1: <img>img/{cheese}</img>\n"),
            ("assistant", "Danbo"),
        ],
        [
            ("system", "You are a helpful AI assistant that describes images."),
            ("user", f"Describe this image.Picture 1: <img>img/{city}</img>\n"),
            ("assistant", "A painting of a city."),
            ("user", "Which colour dominates?"),
            ("assistant", "Blue."),
        ],
        [("user", f"Picture 1: <img>img/{cheese}</img>\nAnd this one?"), ("assistant", "Danbo again.")],
    ]
    assert samples[1]["conversations"][2]["train"] is False
    assert "samples: 3 read, 3 ok" in check_data(capsys, out, tiny_model_dir)


@pytest.mark.slow
def test_real_files_train_two_steps(tmp_path, capsys, tiny_model_dir) -> None:
    from train_fixtures import logged_losses, train_lora_two_steps

    outputs = [
        converted(tmp_path, capsys, "mllm", "--from", "sharegpt", "--dataset-info", LF / "data" / "dataset_info.json"),
        converted(tmp_path, capsys, "v1", "--from", "sharegpt", LF / "data" / "v1_multimodal_demo.jsonl", "--image-root", LF),
        converted(tmp_path, capsys, "openai", "--from", "openai", DATA / "openai" / "vision_finetune.jsonl", "--images-out", tmp_path / "img"),
    ]  # fmt: skip
    trainer = train_lora_two_steps(tiny_model_dir, outputs, tmp_path / "run")
    losses = logged_losses(trainer)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert trainer.train_dataset is not None and len(trainer.train_dataset) == 9
