"""Data pipeline: conversation files -> ChatML ids, labels and pixel values.

- :mod:`.sources` reads JSON / JSON Lines samples (aliases, system turn, one-line errors).
- :mod:`.markup` parses ``<img>``, ``<ref>``, ``<box>``, ``<quad>`` with validation.
- :mod:`.chat` renders ids and labels in one pass under the ``assistant`` or ``reference`` policy.
- :mod:`.images` opens local / http(s) images safely and converts them to RGB.
- :mod:`.dataset` builds the training dataset (truncation, error policy, lengths).
- :mod:`.collator` pads batches and stacks images.
- :mod:`.check` is ``qwenvl-train check-data``.
"""

from __future__ import annotations

from .chat import IGNORE_INDEX, POLICIES, RenderedSample, RenderError, Turn, render_conversation
from .collator import DataCollator
from .dataset import (
    ConversationDataset,
    DatasetSummary,
    SampleLoadError,
    VisionSettings,
    length_grouped_sampler,
    vision_settings,
)
from .images import ImageError, load_image, to_rgb
from .markup import MarkupError, parse_value
from .sources import DataError, DataValidationError, RawSample, read_samples

__all__ = [
    "IGNORE_INDEX",
    "POLICIES",
    "ConversationDataset",
    "DataCollator",
    "DataError",
    "DataValidationError",
    "DatasetSummary",
    "ImageError",
    "MarkupError",
    "RawSample",
    "RenderError",
    "RenderedSample",
    "SampleLoadError",
    "Turn",
    "VisionSettings",
    "length_grouped_sampler",
    "load_image",
    "parse_value",
    "read_samples",
    "render_conversation",
    "to_rgb",
    "vision_settings",
]
