"""Batch samples: pad on the right to the longest in the batch (or, with packing, concatenate them into one row
without padding), stack images in span order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..format import tokens as st
from ..format.render import IGNORE_INDEX


@dataclass
class DataCollator:
    """Collate :class:`ConversationDataset` items.

    Returns ``input_ids`` (padded with ``pad_id``, 151643), ``labels`` (padded with -100),
    ``attention_mask`` (1 on real tokens) and, when the batch has images, ``pixel_values``
    ``[n_images, 3, S, S]`` holding sample 0's images in reading order, then sample 1's, and so on:
    the k-th ``<img>`` span of the flattened batch gets the k-th image, as the model splices them.
    A batch without images has no ``pixel_values`` key. When some items stand in for samples whose image
    failed to load (``replaced``, under ``on_error="skip"``), ``replaced_samples`` (an int) says how many;
    the Trainer takes it out of the batch and counts it. Other keys (``id``) are dropped.

    Attributes:
        pad_id: id used to pad ``input_ids``.
        pad_to_multiple_of: round the padded length up to a multiple of this (None: no rounding).
    """

    pad_id: int = st.PAD_ID
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("empty batch")
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(features)
        input_ids = torch.full((batch, longest), self.pad_id, dtype=torch.long)
        labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, longest), dtype=torch.long)
        images: list[torch.Tensor] = []
        for row, feature in enumerate(features):
            ids = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            n = ids.shape[0]
            input_ids[row, :n] = ids
            labels[row, :n] = torch.as_tensor(feature["labels"], dtype=torch.long)
            attention_mask[row, :n] = 1
            pixels = feature.get("pixel_values")
            if pixels is not None and len(pixels):
                images.append(pixels)
        out = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        return _add_images_and_counts(out, features, images)


@dataclass
class PackingCollator:
    """Pack :class:`ConversationDataset` items into one row without padding (``--packing``).

    Returns ``input_ids`` and ``labels`` ``[1, total]`` (the samples one after the other), ``position_ids``
    ``[1, total]`` restarting at 0 at each sample (from which the model confines attention to each sample), and
    ``pixel_values`` in the same order as :class:`DataCollator` (sample 0's images, then sample 1's, ...), so the
    k-th ``<img>`` span of the row still gets the k-th image. No ``attention_mask``: there is no padding.

    The label of each sample's first token is set to -100: it is never a training target of its own sample (the
    loss shifts labels by one), and this way the previous sample's last token does not learn to predict it. Every
    sample's loss terms are therefore exactly those of the unpacked batch.
    """

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("empty batch")
        ids, labels, positions, images = [], [], [], []
        for feature in features:
            sample_ids = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            sample_labels = torch.as_tensor(feature["labels"], dtype=torch.long).clone()
            sample_labels[:1] = IGNORE_INDEX
            ids.append(sample_ids)
            labels.append(sample_labels)
            positions.append(torch.arange(sample_ids.shape[0], dtype=torch.long))
            pixels = feature.get("pixel_values")
            if pixels is not None and len(pixels):
                images.append(pixels)
        out = {
            "input_ids": torch.cat(ids)[None],
            "labels": torch.cat(labels)[None],
            "position_ids": torch.cat(positions)[None],
        }
        return _add_images_and_counts(out, features, images)


def _add_images_and_counts(
    out: dict[str, Any], features: Sequence[dict[str, Any]], images: list[torch.Tensor]
) -> dict[str, Any]:
    """Add ``pixel_values`` (checked against the ``<img>`` spans) and ``replaced_samples`` to a batch."""
    n_images = sum(int(p.shape[0]) for p in images)
    n_spans = int((out["input_ids"] == st.IMG_START_ID).sum())
    if n_images != n_spans:
        raise ValueError(f"batch has {n_spans} <img> spans but {n_images} images")
    if images:
        out["pixel_values"] = torch.cat(images, dim=0)
    replaced = sum(1 for f in features if f.get("replaced"))
    if replaced:
        out["replaced_samples"] = replaced
    return out
