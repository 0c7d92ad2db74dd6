"""Image preprocessing of Qwen-VL: RGB, bicubic resize to a square, scale to [0, 1], CLIP normalisation.

Equivalent to the original ``transforms.Compose([Resize((s, s), BICUBIC), ToTensor(), Normalize(mean, std)])``
on PIL images (torchvision resizes PIL images with PIL itself), without needing torchvision.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def preprocess_image(image: Image.Image, image_size: int = 448) -> torch.Tensor:
    """Turn one PIL image into the float32 tensor ``[3, image_size, image_size]`` the vision tower expects."""
    image = image.convert("RGB").resize((image_size, image_size), resample=Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    pixels = pixels.to(torch.float32).div(255.0)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean) / std


def image_transform(image_size: int = 448) -> Callable[[Image.Image], torch.Tensor]:
    """The preprocessing for a given side (``config.image_size``) as a callable ``PIL.Image -> Tensor``."""

    def transform(image: Image.Image) -> torch.Tensor:
        return preprocess_image(image, image_size)

    return transform
