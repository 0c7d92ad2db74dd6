"""Frozen-vision feature cache (``--vision_cache DIR``): each image's vision-tower output is computed once.

When nothing under ``transformer.visual`` trains (the ViT and, for LoRA or ``--tune full``, the resampler are
frozen) and images are not augmented (this project never augments them), ``visual(pixels)`` is the same at every
epoch and in every run. The tower is about a quarter of a LoRA step's FLOPs at sequence length 384, so its output
is kept on disk, one safetensors file per image, and reused.

Where it sits: in the Trainer's step, between the collator and the model. The DataLoader workers still load and
transform the pixels (the key is a hash of them); the main process looks the batch's images up, runs the tower
only on the ones it has not seen (under the same autocast as the model's forward) and hands the model
``image_features`` instead of ``pixel_values``. No file I/O happens inside the model's forward.

The key of an image is a SHA-256 of

* the preprocessed pixels (content, side, resize and normalisation all end up in them) with their shape and dtype,
* the fingerprint of the vision weights (every tensor of ``transformer.visual``, names, dtypes and bytes),
* the compute dtype (autocast or not), and a format version.

Files are written aside and renamed into place (``os.replace``), so ranks and runs that compute the same image at
the same time each write a whole file and the last rename wins; a reader never sees half a file. A file that
cannot be read is computed again and replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..model.parameter_names import PEFT_PREFIX, VIT_PREFIX
from .prepare import PreparationError

#: Changes whenever what a cache file holds changes meaning.
CACHE_FORMAT = "qwenvl-vision-features-v1"


def vision_tower(model: nn.Module) -> nn.Module:
    """``transformer.visual`` of a (peft-wrapped, DDP-wrapped) Qwen-VL model."""
    while hasattr(model, "module") and not hasattr(model, "transformer"):
        model = model.module  # DDP / DeepSpeed engine
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model.transformer.visual


def check_vision_cacheable(model: nn.Module) -> None:
    """Refuse ``--vision_cache`` unless the whole vision tower (ViT, resampler, projection) is frozen. (That ZeRO-3
    and FSDP forbid it is known from the options alone: :func:`.validate.validate`.)

    Raises:
        PreparationError: one line naming the first trainable vision parameter.
    """
    for name, param in model.named_parameters():
        bare = name.removeprefix(PEFT_PREFIX)
        if param.requires_grad and bare.startswith(VIT_PREFIX):
            raise PreparationError(
                f"--vision_cache needs a frozen vision tower, but {bare} trains: in --tune full keep "
                "--freeze_vit and add --freeze_resampler; with adapters leave transformer.visual modules out of "
                "--lora_target and --modules_to_save"
            )


def vision_fingerprint(visual: nn.Module) -> str:
    """SHA-256 of every tensor of the vision tower (name, dtype, shape, bytes), in ``state_dict`` order."""
    digest = hashlib.sha256()
    for name, tensor in visual.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def pixels_digest(pixels: torch.Tensor) -> str:
    """SHA-256 of one preprocessed image ``[3, S, S]``: its shape, dtype and bytes."""
    t = pixels.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class VisionFeatureCache:
    """Image features of a frozen vision tower, kept as ``DIR/<key[:2]>/<key>.safetensors``.

    Args:
        root: the cache folder (created).
        visual: the vision tower (``transformer.visual``); it must stay frozen while the cache is used.
        autocast: context manager factory the model's forward runs under (the Trainer's
            ``accelerator.autocast``), so the tower computes exactly as it would inside the forward.

    Attributes:
        hits: images read from the cache so far.
        misses: images the tower computed (and the cache stored) so far.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        visual: nn.Module,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.visual = visual
        self.autocast = autocast
        self.fingerprint = vision_fingerprint(visual)
        self.hits = 0
        self.misses = 0

    def _compute_dtype(self, device: torch.device) -> str:
        with self.autocast():
            if torch.is_autocast_enabled(device.type):
                return f"autocast:{torch.get_autocast_dtype(device.type)}"
        return "plain"

    def key(self, pixels: torch.Tensor, compute_dtype: str = "plain") -> str:
        """The cache key of one preprocessed image under the current vision weights."""
        digest = hashlib.sha256(f"{CACHE_FORMAT}|{self.fingerprint}|{compute_dtype}|".encode())
        digest.update(pixels_digest(pixels).encode())
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        """Where the features of ``key`` are stored."""
        return self.root / key[:2] / f"{key}.safetensors"

    def _read(self, key: str) -> torch.Tensor | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))["features"]
        except Exception:  # noqa: BLE001 - a damaged file is recomputed and replaced
            return None

    def _write(self, key: str, features: torch.Tensor) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(
                {"features": features.detach().to("cpu").contiguous()},
                tmp,
                metadata={"format": CACHE_FORMAT, "vision_fingerprint": self.fingerprint},
            )
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``visual(pixel_values)`` ``[n, n_queries, hidden]``, read from the cache where it can be.

        The images not found are run through the tower together, in one batch, and stored.
        """
        device = next(self.visual.parameters()).device
        compute_dtype = self._compute_dtype(device)
        keys = [self.key(p, compute_dtype) for p in pixel_values]
        found = [self._read(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            with self.autocast():
                computed = self.visual(pixel_values[missing])
            for i, row in zip(missing, computed, strict=True):
                self._write(keys[i], row)
                found[i] = row
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.stack([f.to(device) for f in found])

    def replace_pixels(self, inputs: dict) -> dict:
        """The batch with ``pixel_values`` replaced by ``image_features`` (unchanged when it has no images)."""
        pixel_values = inputs.get("pixel_values")
        if pixel_values is None:
            return inputs
        inputs = dict(inputs)
        inputs["image_features"] = self.features(inputs.pop("pixel_values"))
        return inputs
