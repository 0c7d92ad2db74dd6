"""Run by ``QWENVL_ORIGINAL_PYTHON`` (transformers 4.32) for tests/test_export_original_code.py: the original remote
code loads a model folder and computes the logits of one prompt with a picture.

    python original_remote_logits.py MODEL_DIR PROMPT OUT_FILE      (run in the folder holding the picture)

Loads ``AutoModelForCausalLM.from_pretrained(MODEL_DIR, trust_remote_code=True)`` in fp32 on CPU, tokenizes
PROMPT (``<img>path</img>`` read by the original tokenizer) and writes to OUT_FILE (safetensors) ``logits`` and
``input_ids``, with metadata (JSON strings): the remote ``visual.image_size`` and ``grid_size``, the shape of its
stored position table, and every ``get_abs_pos`` call of the forward as ``[rows in, rows out]``, which shows the
tables were resized for the configured size.

Two stand-ins, since this is a test harness and not the original's own environment:

- ``torchvision.transforms``: torchvision's PyPI wheels cannot load beside the CPU torch here (see
  benchmarks/serve_vs_original.py, whose stand-in refuses pictures). This one computes what torchvision does on a
  PIL picture (``Resize`` with a size pair: PIL's own resize; ``ToTensor``: uint8 HWC to float CHW / 255;
  ``Normalize``), and opens a path given instead of a picture (the remote-code copy used here passes the paths
  from the prompt to the transform; the Hugging Face one opens them first).
- the tokenizer's ``IMG_TOKEN_SPAN``: the original hard-codes 256 positions per picture, the real model's
  ``n_queries``; a model whose config says otherwise (the tiny model: 16) gets its own number.
"""

from __future__ import annotations

import enum
import importlib.machinery
import json
import sys
import types

import numpy as np
import torch
from PIL import Image


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


_PIL_FILTER = {
    InterpolationMode.NEAREST: Image.Resampling.NEAREST,
    InterpolationMode.BILINEAR: Image.Resampling.BILINEAR,
    InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
}


class Compose:
    def __init__(self, transforms: list) -> None:
        self.transforms = transforms

    def __call__(self, image: object) -> object:
        if isinstance(image, str):
            image = Image.open(image).convert("RGB")
        for transform in self.transforms:
            image = transform(image)
        return image


class Resize:
    def __init__(
        self, size: tuple[int, int], interpolation: InterpolationMode = InterpolationMode.BILINEAR
    ) -> None:
        self.height, self.width = size
        self.interpolation = interpolation

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.resize((self.width, self.height), resample=_PIL_FILTER[self.interpolation])


class ToTensor:
    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)


class Normalize:
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return (tensor - self.mean) / self.std


def install_torchvision_standin() -> None:
    """Modules with a spec, which transformers' availability probe (``find_spec``) requires."""
    transforms = types.ModuleType("torchvision.transforms")
    transforms.__spec__ = importlib.machinery.ModuleSpec("torchvision.transforms", None)
    for obj in (InterpolationMode, Compose, Resize, ToTensor, Normalize):
        setattr(transforms, obj.__name__, obj)
    torchvision = types.ModuleType("torchvision")
    torchvision.__spec__ = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
    torchvision.transforms = transforms
    sys.modules.update({"torchvision": torchvision, "torchvision.transforms": transforms})


def main(model_dir: str, prompt: str, out_file: str) -> None:
    install_torchvision_standin()
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True, fp32=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    sys.modules[type(tokenizer).__module__].IMG_TOKEN_SPAN = model.config.visual["n_queries"]
    visual = model.transformer.visual
    visual_module = sys.modules[type(visual).__module__]
    calls = []
    get_abs_pos = visual_module.get_abs_pos

    def recording_get_abs_pos(abs_pos: torch.Tensor, tgt_size: int) -> torch.Tensor:
        out = get_abs_pos(abs_pos, tgt_size)
        calls.append([abs_pos.shape[0], out.shape[0]])
        return out

    visual_module.get_abs_pos = recording_get_abs_pos
    input_ids = torch.tensor([tokenizer(prompt).input_ids])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits.float().contiguous()
    metadata = {
        "image_size": list(visual.image_size),
        "grid_size": list(visual.grid_size),
        "positional_embedding": list(visual.positional_embedding.shape),
        "get_abs_pos": calls,
        "dtype": str(next(model.parameters()).dtype),
    }
    save_file(
        {"logits": logits, "input_ids": input_ids.contiguous()},
        out_file,
        metadata={k: json.dumps(v) for k, v in metadata.items()},
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
