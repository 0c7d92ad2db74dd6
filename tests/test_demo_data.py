"""demo-data: the generated grounding set is deterministic, every box is the bounding box of the drawn pixels of
the named colour, it mixes Chinese, multi-turn and two-picture samples, and check-data accepts it."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qwenvl_train.cli import main as cli_main
from qwenvl_train.data.check import check_data
from qwenvl_train.demo.data import COLOURS, COLOURS_ZH, IMAGE_SIZE, write_demo_data
from qwenvl_train.tokenizer import QwenVLTokenizer

BOX = re.compile(r"^<ref>(.+)</ref><box>\((\d+),(\d+)\),\((\d+),(\d+)\)</box>$")
IMG = re.compile(r"<img>(.+?)</img>")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    write_demo_data(out, n=120, n_heldout=16, seed=3)
    return out


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def pixel_box(image: Image.Image, colour: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """The [0, 1000) box of the pixels of exactly ``colour``."""
    mask = np.all(np.asarray(image.convert("RGB")) == np.array(colour), axis=-1)
    ys, xs = np.nonzero(mask)
    assert len(xs) > 50, "shape not found"
    w, h = image.size
    return (
        xs.min() * 1000 // w,
        ys.min() * 1000 // h,
        (xs.max() + 1) * 1000 // w,
        (ys.max() + 1) * 1000 // h,
    )


def test_same_seed_same_files_other_seed_other_files(demo_dir, tmp_path):
    again = tmp_path / "again"
    write_demo_data(again, n=120, n_heldout=16, seed=3)
    for name in ("train.json", "heldout.json"):
        assert (again / name).read_bytes() == (demo_dir / name).read_bytes()
    images = sorted(p.name for p in (demo_dir / "images").iterdir())
    assert images == sorted(p.name for p in (again / "images").iterdir())
    assert all((again / "images" / n).read_bytes() == (demo_dir / "images" / n).read_bytes() for n in images)
    other = tmp_path / "other"
    write_demo_data(other, n=120, n_heldout=16, seed=4)
    assert (other / "train.json").read_bytes() != (demo_dir / "train.json").read_bytes()


def test_every_box_is_the_drawn_shape(demo_dir):
    names_zh = {v: k for k, v in COLOURS_ZH.items()}
    checked = 0
    for split in ("train.json", "heldout.json"):
        for sample in load(demo_dir / split):
            picture = None
            for turn in sample["conversations"]:
                found = IMG.findall(turn["value"])
                if found:
                    picture = Image.open(demo_dir / found[-1])
                    assert picture.size == (IMAGE_SIZE, IMAGE_SIZE)
                match = BOX.match(turn["value"])
                if turn["from"] != "assistant" or not match:
                    continue
                ref = match.group(1)
                colour = ref.split()[1] if ref.startswith("the ") else names_zh[ref.split("的")[0]]
                box = tuple(int(v) for v in match.groups()[1:])
                assert pixel_box(picture, COLOURS[colour]) == box, (sample["id"], ref)
                assert all(0 <= v < 1000 for v in box)
                checked += 1
    assert checked > 136  # every sample has at least one box, two-picture samples two


def test_mix_of_languages_turns_and_pictures(demo_dir):
    samples = load(demo_dir / "train.json")
    turns = [s["conversations"] for s in samples]
    chinese = [t for t in turns if "<ref>" in t[-1]["value"] and "the " not in t[-1]["value"]]
    multi_turn = [t for t in turns if len(t) == 4]
    two_pictures = [t for t in turns if sum(len(IMG.findall(x["value"])) for x in t) == 2]
    assert 5 <= len(chinese) <= 40 and len(multi_turn) >= 5 and len(two_pictures) >= 5
    assert all(len(t) == 4 for t in two_pictures)  # one question per picture
    assert len({s["id"] for s in samples}) == 120
    assert all(t[0]["value"].startswith("Picture 1: <img>images/") for t in turns)


def test_passes_check_data(demo_dir, vocab_file, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"model_type": "qwen", "visual": {"n_queries": 16, "image_size": 56}})
    )
    out = io.StringIO()
    tok = QwenVLTokenizer(vocab_file=str(vocab_file))
    paths = [str(demo_dir / "train.json"), str(demo_dir / "heldout.json")]
    code = check_data(paths, model, out=out, tokenizer=tok, model_max_length=192)
    report = out.getvalue()
    assert code == 0, report
    assert "samples: 136 read, 136 ok, 0 with errors" in report
    assert "over max length 192: 0 samples" in report


def test_cli_writes_both_splits(tmp_path, capsys):
    assert cli_main(["demo-data", str(tmp_path / "d"), "--n", "3", "--n-heldout", "2", "--seed", "1"]) == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "d" / "train.json"),
        str(tmp_path / "d" / "heldout.json"),
    ]
    assert [s["id"] for s in load(tmp_path / "d" / "heldout.json")] == ["heldout_00000", "heldout_00001"]
