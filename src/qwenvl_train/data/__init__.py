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

from ..lazy import keep_function_over_submodule, lazy_getattr

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

#: Where each public name lives; imported on first access, so importing the package stays cheap.
_LAZY = {
    "IGNORE_INDEX": ".chat",
    "POLICIES": ".chat",
    "RenderedSample": ".chat",
    "RenderError": ".chat",
    "Turn": ".chat",
    "render_conversation": ".chat",
    "DataCollator": ".collator",
    "DataValidationError": ".errors",
    "ImageError": ".errors",
    "NoSamplesError": ".errors",
    "SampleLoadError": ".errors",
    "TrainingDataError": ".errors",
    "ConversationDataset": ".dataset",
    "length_grouped_sampler": ".dataset",
    "image_tensor": ".images",
    "load_image": ".images",
    "resolve_image": ".images",
    "to_rgb": ".images",
    "MarkupError": ".markup",
    "parse_value": ".markup",
    "DataOptions": ".options",
    "VisionSettings": "..model.visual_config",
    "vision_settings": "..model.visual_config",
    "ScanItems": ".scan",
    "ScanResult": ".scan",
    "ScanSummary": ".scan",
    "scan": ".scan",
    "DataError": ".sources",
    "RawSample": ".sources",
    "read_samples": ".sources",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


keep_function_over_submodule(__name__, "scan")
