"""Each importer's output trains: ``convert`` (every format) then ``check-data`` then ``train --max_steps 2`` on
the tiny model, on CPU, in one run over all six converted files."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from convert_fixtures import check_data, convert, picture, write_json, write_jsonl
from train_fixtures import logged_losses, train_lora_two_steps


def sources(tmp_path):
    """One small source per format, with pictures of known sizes; ``{format: (args...)}``."""
    pics = tmp_path / "pics"
    picture(pics / "a.png", 64, 48)
    picture(pics / "b.png", 40, 80, (20, 20, 220))
    qa = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]
    llava = write_json(
        tmp_path / "llava.json", [{"id": f"l{i}", "image": "a.png", "conversations": qa} for i in range(2)]
    )
    sharegpt = write_jsonl(
        tmp_path / "sharegpt.jsonl",
        [{"messages": [{"role": "user", "content": "<image>Colour?"}, {"role": "assistant", "content": "Blue."}],
          "images": ["b.png"]}],
    )  # fmt: skip
    swift = write_jsonl(
        tmp_path / "swift.jsonl",
        [{"messages": [{"role": "user", "content": "<image>Find <ref-object>"}, {"role": "assistant", "content": "<bbox>"}],
          "images": ["a.png"], "objects": {"ref": ["the square"], "bbox": [[0, 0, 64, 48]], "bbox_type": "real"}}],
    )  # fmt: skip
    coco = write_json(
        tmp_path / "instances.json",
        {"images": [{"id": 1, "file_name": "b.png", "width": 40, "height": 80}],
         "categories": [{"id": 1, "name": "block"}],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 8, 20, 40]}]},
    )  # fmt: skip
    refcoco = write_jsonl(
        tmp_path / "refcoco.jsonl",
        [{"file_name": "a.png", "bbox": [8, 8, 32, 24], "sentences": ["the middle"]}],
    )
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    buffer = io.BytesIO()
    Image.new("RGB", (30, 30), (0, 180, 0)).save(buffer, format="PNG")
    parquet = tmp_path / "cauldron.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "images": [{"bytes": buffer.getvalue(), "path": None}],
                    "texts": [{"user": "Colour?", "assistant": "Green."}],
                }
            ]
        ),
        parquet,
    )
    root = ("--image-root", pics)
    return {
        "llava": (llava, *root),
        "sharegpt": (sharegpt, *root),
        "swift": (swift, *root),
        "coco": (coco, *root),
        "refcoco": (refcoco, *root),
        "parquet": (parquet, "--images-out", tmp_path / "out" / "images"),
    }


@pytest.mark.slow
def test_every_format_converts_checks_and_trains(tmp_path, capsys, tiny_model_dir) -> None:
    outputs = []
    for fmt, args in sources(tmp_path).items():
        out = tmp_path / "out" / f"{fmt}.jsonl"
        code, _, stderr = convert(capsys, "--from", fmt, *args, "--out", out)
        assert code == 0, (fmt, stderr)
        outputs.append(out)
        assert "ok" in check_data(capsys, out, tiny_model_dir)
    trainer = train_lora_two_steps(tiny_model_dir, outputs, tmp_path / "run")
    losses = logged_losses(trainer)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert trainer.train_dataset is not None and len(trainer.train_dataset) == 7
