"""Batch samples: pad on the right to the longest in the batch, stack images in span order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .. import special_tokens as st
from .chat import IGNORE_INDEX


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
        n_images = sum(int(p.shape[0]) for p in images)
        n_spans = int((input_ids == st.IMG_START_ID).sum())
        if n_images != n_spans:
            raise ValueError(f"batch has {n_spans} <img> spans but {n_images} images")
        if images:
            out["pixel_values"] = torch.cat(images, dim=0)
        replaced = sum(1 for f in features if f.get("replaced"))
        if replaced:
            out["replaced_samples"] = replaced
        return out
