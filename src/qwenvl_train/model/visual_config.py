"""The ``visual`` part of a Qwen-VL ``config.json``: its defaults, and the two settings the data pipeline reads.

:data:`VISUAL_DEFAULTS` is what :class:`~.configuration.QwenVLConfig` fills in for a key the ``visual`` dict does
not set; :func:`vision_settings` reads ``n_queries`` and ``image_size`` (what a sample's image span and pixel
tensor need) from a model directory, a config dict or a config object with the same defaults. This module imports
nothing beyond the standard library, so training data can be read and checked (``check-data``) without loading
the model classes or transformers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

#: Defaults of the ``visual`` sub-dict: the ViT-bigG tower of the released checkpoints. ``n_queries`` is not in
#: the released config.json (the remote code hard-codes 256); a tiny test config may set it.
VISUAL_DEFAULTS: dict[str, Any] = {
    "heads": 16,
    "image_size": 448,
    "image_start_id": 151857,
    "layers": 48,
    "mlp_ratio": 4.9231,
    "output_dim": 4096,
    "patch_size": 14,
    "width": 1664,
    "n_queries": 256,
}
DEFAULT_N_QUERIES: int = VISUAL_DEFAULTS["n_queries"]
DEFAULT_IMAGE_SIZE: int = VISUAL_DEFAULTS["image_size"]


#: In an adapter folder (which has no ``config.json``, see :mod:`qwenvl_train.training.run_checkpoints`): the
#: ``visual`` settings the adapter was trained with that its base's ``config.json`` may not have (``image_size``).
ADAPTER_VISUAL_FILE = "visual_config.json"


def adapter_visual(folder: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The ``visual`` settings an adapter folder records (``{"image_size": 896}``), or ``{}`` when it records none
    (an adapter written before the record existed, or not an adapter folder)."""
    if folder is None:
        return {}
    path = Path(folder) / ADAPTER_VISUAL_FILE
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")))


def write_adapter_visual(folder: str | os.PathLike[str], visual: Mapping[str, Any]) -> None:
    """Record the ``image_size`` of ``visual`` (a model config's ``visual`` dict) in an adapter folder."""
    record = {"image_size": int(visual.get("image_size", DEFAULT_IMAGE_SIZE))}
    (Path(folder) / ADAPTER_VISUAL_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def with_image_size(config: Any, image_size: int | None) -> Any:
    """``config`` (a ``QwenVLConfig``) with ``visual.image_size`` set to ``image_size`` (unchanged when None)."""
    if image_size is not None:
        config.visual = {**config.visual, "image_size": int(image_size)}
    return config


class VisionSettings(NamedTuple):
    """What the data pipeline needs from the model config."""

    n_queries: int
    image_size: int


def vision_settings(model: str | os.PathLike[str] | Mapping[str, Any] | Any) -> VisionSettings:
    """Read ``n_queries`` and ``image_size`` from a model directory, a config dict or a config object.

    Reads ``config.visual["n_queries"]`` (default 256: the original config does not store it) and
    ``config.visual["image_size"]`` (default 448). A directory is read from its ``config.json`` alone,
    without importing the model classes.
    """
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        path = path / "config.json" if path.is_dir() else path
        config: Any = json.loads(path.read_text(encoding="utf-8"))
    else:
        config = model
    visual = config.get("visual") if isinstance(config, Mapping) else getattr(config, "visual", None)
    visual = visual or {}
    if not isinstance(visual, Mapping):
        visual = vars(visual)
    return VisionSettings(
        int(visual.get("n_queries", DEFAULT_N_QUERIES)),
        int(visual.get("image_size", DEFAULT_IMAGE_SIZE)),
    )
