"""A folder ``merge`` wrote after ``train --image_size 112 --lora_target llm resampler`` loads in the original
Qwen-VL remote code (transformers 4.32, ``trust_remote_code=True``) and computes our native model's logits there,
at 112 px; the base checkpoint at its own 56 px is the control.

The original code and its transformers are not part of this project: set ``QWENVL_ORIGINAL_REMOTE_CODE`` to a
folder with the five remote-code files of Qwen/Qwen-VL-Chat (``configuration_qwen.py``, ``modeling_qwen.py``,
``qwen_generation_utils.py``, ``tokenization_qwen.py``, ``visual.py``) and ``QWENVL_ORIGINAL_PYTHON`` to a python
with transformers 4.32 (e.g. the venv benchmarks/serve_vs_original.py builds) to run these; they are skipped
otherwise. The original side runs in its own process (tests/original_remote_logits.py, which explains its two
stand-ins), offline, in a scratch folder holding the picture and an empty ``SimSun.ttf`` (the original tokenizer
downloads that font at import unless the file is there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from export_fixtures import train_adapter
from qwenvl_train.export import merge
from qwenvl_train.format.render import image_span
from qwenvl_train.format.tokens import IMG_END_ID, IMG_PAD_ID, IMG_START_ID
from qwenvl_train.model.image_processing import preprocess_image
from train_fixtures import write_dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from serve_vs_original import REMOTE_CODE  # noqa: E402

REMOTE = os.environ.get("QWENVL_ORIGINAL_REMOTE_CODE", "")
PYTHON = os.environ.get("QWENVL_ORIGINAL_PYTHON", "")
pytestmark = pytest.mark.skipif(
    not (REMOTE and all((Path(REMOTE) / name).is_file() for name in REMOTE_CODE) and PYTHON),
    reason="set QWENVL_ORIGINAL_REMOTE_CODE to a folder with the Qwen-VL-Chat remote-code files and "
    "QWENVL_ORIGINAL_PYTHON to a python with transformers 4.32",
)
WORKER = Path(__file__).with_name("original_remote_logits.py")
#: The original tokenizer reads the picture's path between <img> and </img>; relative, as it must fit in the tiny
#: model's 16 image positions (the worker runs in the folder holding it).
PROMPT = "<|im_start|>user\nPicture 1: <img>pic.png</img>\nWhat is in the picture?<|im_end|>\n<|im_start|>assistant\n"


def original_logits(
    model_dir: Path, picture: Image.Image, scratch: Path
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``model_dir`` with the remote-code files copied in, run by the original code on ``picture``: its logits,
    input ids and metadata (see tests/original_remote_logits.py)."""
    for name in REMOTE_CODE:
        shutil.copyfile(Path(REMOTE) / name, model_dir / name)
    scratch.mkdir()
    picture.save(scratch / "pic.png")
    (scratch / "SimSun.ttf").touch()
    out = scratch / "original.safetensors"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(scratch / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([PYTHON, str(WORKER), str(model_dir), PROMPT, str(out)], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    with safe_open(str(out), "pt") as f:
        metadata = {k: json.loads(v) for k, v in f.metadata().items()}
        return f.get_tensor("logits"), f.get_tensor("input_ids"), metadata


def native_logits(model_dir: Path, input_ids: torch.Tensor, picture: Image.Image, size: int) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    assert model.transformer.visual.image_size == size
    pixels = preprocess_image(picture, size).unsqueeze(0)
    with torch.no_grad():
        return model(input_ids=input_ids, pixel_values=pixels).logits.float()


def picture_of(size: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8))


def assert_same_logits(model_dir: Path, size: int, scratch: Path) -> dict:
    """The original's logits on ``PROMPT`` with a random picture of ``size`` px equal ours on the same ids, and on
    the ids our renderer writes (the picture's positions all ``<imgpad>``: both models overwrite them)."""
    picture = picture_of(size)
    theirs, input_ids, metadata = original_logits(model_dir, picture, scratch)
    assert metadata["dtype"] == "torch.float32"
    ids = input_ids[0].tolist()
    start = ids.index(IMG_START_ID)
    # The original tokenizer writes the path's bytes (ids 0-255) into the picture's 16 positions, then padding.
    assert ids[start : start + 18] == [IMG_START_ID, *b"pic.png", *[IMG_PAD_ID] * 9, IMG_END_ID]
    rendered = torch.tensor([ids[:start] + image_span(16) + ids[start + 18 :]])
    for ours in (
        native_logits(model_dir, input_ids, picture, size),
        native_logits(model_dir, rendered, picture, size),
    ):
        assert ours.shape == theirs.shape
        diff = (ours - theirs).abs().max().item()
        assert diff <= 1e-4, diff
    # The picture matters: the same prompt on another picture moves the logits by far more than the tolerance.
    other = native_logits(model_dir, input_ids, picture_of(size + 1).resize((size, size)), size)
    assert (other - theirs).abs().max().item() > 1e-3
    return metadata


def test_merged_112px_folder_gives_our_logits_in_the_original_code(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = write_dataset(tmp_path / "data", image_size=112)
    adapter = train_adapter(tiny_model_dir, data, tmp_path / "adapter", "lora", "--image_size", "112",
                            "--lora_target", "llm", "resampler")  # fmt: skip
    merged = merge(adapter, tmp_path / "merged")
    visual = json.loads((merged / "config.json").read_text())["visual"]
    assert visual["image_size"] == 112 and visual["n_queries"] == 16
    metadata = assert_same_logits(merged, 112, tmp_path / "scratch")
    # The original built its tower for 112 px (an 8 x 8 grid) and resized both position tables to it: the ViT's
    # stored 16 x 16 table (256 rows) and the resampler's 4 x 4 one (16 rows, the tiny model's 16 queries).
    assert metadata["image_size"] == [112, 112] and metadata["grid_size"] == [8, 8]
    assert metadata["positional_embedding"] == [256, visual["width"]]
    assert metadata["get_abs_pos"] == [[256, 64], [16, 64]]


def test_base_checkpoint_at_its_own_56px_control(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    metadata = assert_same_logits(base, 56, tmp_path / "scratch")
    assert metadata["image_size"] == [56, 56] and metadata["grid_size"] == [4, 4]
    # 56 px: a 4 x 4 grid, the resampler's own table; only the ViT's 256-row table is resized.
    assert metadata["get_abs_pos"] == [[256, 16], [16, 16]]
