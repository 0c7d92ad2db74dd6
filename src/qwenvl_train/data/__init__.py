"""Data: conversation files -> ChatML ids, labels and pixel values.

The format itself (sample types, conversation rules, markup, ChatML ids and labels under the ``assistant`` or
``reference`` policy) is :mod:`qwenvl_train.format`; this package reads files, scans them and feeds training.

- :mod:`.engine` is the scan engine, the one reading of data files that ``train`` and ``check-data`` share: items,
  every error, the counts, done once and cached (``data.scan``, the function, is :func:`.engine.scan`). Inside:
  :mod:`.engine.reader` (JSON text piece by piece), :mod:`.engine.records` (files -> records -> samples, structure
  checked), :mod:`.engine.samples` (one sample: rules, markup, ids and trained mask, truncation; image checks),
  :mod:`.engine.chunks` and :mod:`.engine.pipeline` (chunks of records scanned by worker processes, merged in input
  order), :mod:`.engine.columns` (the kept samples as memory-mapped columns), :mod:`.engine.result` (with the
  counts and errors) and
  :mod:`.engine.cache` (the scan cache).
- :mod:`.images` is the one image loader (local / http(s), original pixels).
- :mod:`.options` defines the data options shared by ``train`` and ``check-data``.
- :mod:`.errors` holds the data layer's exceptions (``TrainingDataError``, ``DataValidationError``,
  ``NoSamplesError``, ``SampleLoadError``, ``ImageError``).
- :mod:`.dataset` is the training dataset over a scan's items (images loaded per item).
- :mod:`.collator` pads batches and stacks images.
- :mod:`.check` is ``qwenvl-train check-data``: the scan plus a printer.
- :mod:`.convert` is ``qwenvl-train convert``: one importer per source format (LLaVA, ShareGPT, ms-swift,
  parquet, COCO, RefCOCO) writing the conversations format, boxes through :mod:`qwenvl_train.format.boxes`.

What the data needs from a model config (``n_queries``, ``image_size``) is read by
:func:`qwenvl_train.model.visual_config.vision_settings`, exported here too.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

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
    "length_grouped_sampler": ".dataset",
    "scan": ".engine",
    "ScanItems": ".engine",
    "ScanResult": ".engine",
    "ScanSummary": ".engine",
    "read_samples": ".engine.records",
    "DataValidationError": ".errors",
    "ImageError": ".errors",
    "NoSamplesError": ".errors",
    "SampleLoadError": ".errors",
    "TrainingDataError": ".errors",
    "image_tensor": ".images",
    "load_image": ".images",
    "resolve_image": ".images",
    "to_rgb": ".images",
    "DataOptions": ".options",
    "vision_settings": "..model.visual_config",
    "VisionSettings": "..model.visual_config",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
