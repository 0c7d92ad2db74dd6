"""Data pipeline: conversation files -> ChatML ids, labels and pixel values.

The format itself (sample types, conversation rules, markup, ChatML ids and labels under the ``assistant`` or
``reference`` policy) is :mod:`qwenvl_train.format`; this package reads files, scans them and feeds training.

- :mod:`.jsonstream` reads JSON text piece by piece (values with their lines, never the whole file).
- :mod:`.sources` reads JSON / JSON Lines records (structure, aliases, system turn, one-line errors).
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
    "ConversationDataset",
    "DataCollator",
    "DataOptions",
    "DataValidationError",
    "ImageError",
    "NoSamplesError",
    "SampleLoadError",
    "ScanItems",
    "ScanResult",
    "ScanSummary",
    "TrainingDataError",
    "VisionSettings",
    "image_tensor",
    "length_grouped_sampler",
    "load_image",
    "read_samples",
    "resolve_image",
    "scan",
    "to_rgb",
    "vision_settings",
]

#: Where each public name lives; imported on first access, so importing the package stays cheap.
_LAZY = {
    "DataCollator": ".collator",
    "ConversationDataset": ".dataset",
    "SampleLoadError": ".dataset",
    "VisionSettings": ".dataset",
    "length_grouped_sampler": ".dataset",
    "vision_settings": ".dataset",
    "ImageError": ".images",
    "image_tensor": ".images",
    "load_image": ".images",
    "resolve_image": ".images",
    "to_rgb": ".images",
    "DataOptions": ".options",
    "NoSamplesError": ".scan",
    "ScanItems": ".scan",
    "ScanResult": ".scan",
    "ScanSummary": ".scan",
    "scan": ".scan",
    "DataValidationError": ".sources",
    "TrainingDataError": ".sources",
    "read_samples": ".sources",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


keep_function_over_submodule(__name__, "scan")
