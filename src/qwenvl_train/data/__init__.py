"""Data pipeline: conversation files -> ChatML ids, labels and pixel values.

- :mod:`.jsonstream` reads JSON text piece by piece (values with their lines, never the whole file).
- :mod:`.sources` reads JSON / JSON Lines records (structure, aliases, system turn, one-line errors).
- :mod:`.rules` checks the shape and content of a conversation.
- :mod:`.markup` parses ``<img>``, ``<ref>``, ``<box>``, ``<quad>`` with validation.
- :mod:`.chat` renders ids and labels in one pass under the ``assistant`` or ``reference`` policy.
- :mod:`.images` is the one image loader (local / http(s), original pixels).
- :mod:`.options` defines the data options shared by ``train`` and ``check-data``.
- :mod:`.scan` is the one scan both use: items, every error, the counts; its stages are in :mod:`.stages`,
  run over files by worker processes in :mod:`.pipeline`, kept as memory-mapped columns (:mod:`.items`,
  :mod:`.result`) in the scan cache (:mod:`.cache`).
- :mod:`.dataset` is the training dataset over a scan's items (images loaded per item).
- :mod:`.collator` pads batches and stacks images.
- :mod:`.check` is ``qwenvl-train check-data``: the scan plus a printer.
"""

from __future__ import annotations

from .chat import IGNORE_INDEX, POLICIES, RenderedSample, RenderError, Turn, render_conversation
from .collator import DataCollator
from .dataset import (
    ConversationDataset,
    SampleLoadError,
    VisionSettings,
    length_grouped_sampler,
    vision_settings,
)
from .images import ImageError, image_tensor, load_image, resolve_image, to_rgb
from .markup import MarkupError, parse_value
from .options import DataOptions
from .scan import NoSamplesError, ScanItems, ScanResult, ScanSummary, scan
from .sources import DataError, DataValidationError, RawSample, TrainingDataError, read_samples

__all__ = [
    "IGNORE_INDEX",
    "POLICIES",
    "ConversationDataset",
    "DataCollator",
    "DataError",
    "DataOptions",
    "DataValidationError",
    "ImageError",
    "MarkupError",
    "NoSamplesError",
    "RawSample",
    "RenderError",
    "RenderedSample",
    "SampleLoadError",
    "ScanItems",
    "ScanResult",
    "ScanSummary",
    "TrainingDataError",
    "Turn",
    "VisionSettings",
    "image_tensor",
    "length_grouped_sampler",
    "load_image",
    "parse_value",
    "read_samples",
    "render_conversation",
    "resolve_image",
    "scan",
    "to_rgb",
    "vision_settings",
]
