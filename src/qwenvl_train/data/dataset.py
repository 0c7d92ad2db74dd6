"""The training dataset: a thin map-style ``Dataset`` over a scan's items; images are loaded in ``__getitem__``.

Usage (what the trainer does)::

    tokenizer = QwenVLTokenizer.from_pretrained(model_dir)
    train = ConversationDataset.from_model(["data/demo.json"], tokenizer, model_dir, model_max_length=2048)
    print(train.summary)                      # also logged: kept / dropped / cut / errors
    loader = DataLoader(train, batch_size=4, collate_fn=DataCollator(), num_workers=2)

Everything about reading, checking, rendering and truncating happens in :func:`.engine.scan` (shared with
``check-data``, cached, memory-mapped); this class applies the error policy to the scan's verdict, logs its
one-line summary, and loads images. It holds the scan's columns through memory maps, so its resident memory does
not grow with the dataset, and it pickles (to DataLoader workers started by spawn) as a reference to the
cache entry. Item format: ``input_ids`` and ``labels`` (int64, unpadded), ``pixel_values``
(``[n_images, 3, S, S]`` or None) and ``id``; an item that stands in for a sample whose image failed also
has ``replaced`` (the reason, one line).

Images that fail when the DataLoader reaches them (a file deleted or corrupted after the scan, a URL that
went away; truncated files too when only headers were checked):

- ``on_error="raise"``: :class:`SampleLoadError`, one line naming file:line, sample, turn and image, as the
  scan's errors do (printed on a line of its own, below the progress bar).
- ``on_error="skip"``: the sample is replaced by the next one in dataset order whose images load (the same
  choice on every rank and in every epoch, so every rank keeps the same number of steps), a warning names
  it, and the collator counts it for the Trainer, which reports the total at the end.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..format.render import TextEncoder
from ..format.sample import DataProblem
from ..model.visual_config import DEFAULT_IMAGE_SIZE, DEFAULT_N_QUERIES, vision_settings
from .engine import ScanItems, ScanResult, ScanSummary, scan
from .errors import ImageError, SampleLoadError
from .images import image_tensor
from .options import DataOptions

logger = logging.getLogger(__name__)

MAX_REPLACEMENT_TRIES = 16  # following samples tried in place of one whose image failed


class ConversationDataset(Dataset):
    """Map-style dataset over the kept items of a scan (see the module docstring).

    Args:
        result: what :func:`.engine.scan` found; its ``options`` give the error policy and image limits.
        image_size: side of the square model input (``vision_settings(model_dir).image_size``).

    Raises:
        DataValidationError: ``on_error="raise"`` and some sample is bad (lists every error).
        NoSamplesError: no sample is left.
    """

    def __init__(self, result: ScanResult, *, image_size: int = DEFAULT_IMAGE_SIZE) -> None:
        summary = result.summary
        stops = summary.errors and result.options.on_error == "raise"
        if not stops:  # when it stops, the exception lists the errors
            if summary.errors:
                logger.warning(
                    "skipping %d bad sample(s) and %d unreadable file(s) (%d error(s)), e.g. %s",
                    summary.skipped,
                    summary.unreadable_files,
                    len(summary.errors),
                    summary.errors[0],
                )
            (logger.warning if summary.changed else logger.info)("dataset: %s", summary)
        result.raise_for_errors()
        self.items: ScanItems = result.items
        self.summary: ScanSummary = summary
        self.n_queries = result.n_queries
        self.image_size = image_size
        self.options = result.options

    @classmethod
    def from_files(
        cls,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        tokenizer: TextEncoder,
        *,
        n_queries: int = DEFAULT_N_QUERIES,
        image_size: int = DEFAULT_IMAGE_SIZE,
        **options: Any,
    ) -> ConversationDataset:
        """Scan ``paths`` and build the dataset.

        Args:
            paths: data files (``.json`` / ``.jsonl``), concatenated in order.
            tokenizer: a ``QwenVLTokenizer`` (anything with ``encode_text``).
            n_queries: positions per image span.
            image_size: side of the square model input.
            options: :class:`DataOptions` fields (``model_max_length``, ``truncation``, ``on_error``, ...).
        """
        result = scan(paths, tokenizer, DataOptions(**options), n_queries=n_queries)
        return cls(result, image_size=image_size)

    @classmethod
    def from_model(
        cls,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        tokenizer: TextEncoder,
        model: str | os.PathLike[str] | Mapping[str, Any] | Any,
        **options: Any,
    ) -> ConversationDataset:
        """:meth:`from_files` with ``n_queries`` / ``image_size`` read from a model directory or config."""
        settings = vision_settings(model)
        return cls.from_files(
            paths, tokenizer, n_queries=settings.n_queries, image_size=settings.image_size, **options
        )

    def __len__(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sample (image spans counted), int64, memory-mapped: what length-grouped sampling needs."""
        return self.items.lengths

    def load(self, index: int) -> dict[str, Any]:
        """Item ``index`` with its images loaded; :class:`SampleLoadError` when one fails."""
        item = self.items[index]
        pixel_values = None
        if item.images:
            tensors = []
            for ref, turn in zip(item.images, item.image_turns, strict=True):
                try:
                    tensors.append(
                        image_tensor(
                            ref,
                            self.image_size,
                            max_pixels=self.options.max_image_pixels,
                            timeout=self.options.image_timeout,
                        )
                    )
                except ImageError as exc:
                    problem = DataProblem(
                        item.file, str(exc), item.id, turn, item.line
                    )  # file:line, as the scan
                    raise SampleLoadError(str(problem)) from None
            pixel_values = torch.stack(tensors)
        # The labels are made from the scan's trained mask here, in the worker (Item.labels), and nowhere before.
        return {
            "input_ids": torch.from_numpy(item.input_ids.astype(np.int64)),
            "labels": torch.from_numpy(item.labels.astype(np.int64)),
            "pixel_values": pixel_values,
            "id": item.id,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``input_ids``, ``labels`` (int64, unpadded), ``pixel_values`` ([n, 3, S, S] or None), ``id``."""
        try:
            return self.load(index)
        except SampleLoadError as exc:
            if self.options.on_error == "raise":
                raise SampleLoadError(
                    f"{exc} (run `qwenvl-train check-data --verify_images full` to find every such image "
                    "before training, or pass --on_error skip)"
                ) from None
            return self._replacement(index, str(exc))

    def _replacement(self, index: int, reason: str) -> dict[str, Any]:
        """The next sample in dataset order whose images load, flagged ``replaced``."""
        tries = min(len(self) - 1, MAX_REPLACEMENT_TRIES)
        for step in range(1, tries + 1):
            other = (index + step) % len(self)
            try:
                item = self.load(other)
            except SampleLoadError as exc:
                logger.warning("%s (while replacing sample %d)", exc, index)
                continue
            logger.warning("%s; replaced by sample %r (on_error=skip)", reason, item["id"])
            item["replaced"] = reason
            return item
        raise SampleLoadError(
            f"{reason}; the {tries} sample(s) after it failed to load too: giving up (images unreachable?)"
        )


def length_grouped_sampler(
    dataset: ConversationDataset, batch_size: int, generator: torch.Generator | None = None
) -> torch.utils.data.Sampler:
    """A ``transformers`` ``LengthGroupedSampler`` fed with ``dataset.lengths`` (no image is loaded).

    The Trainer's own ``group_by_length`` would iterate the dataset (loading every image) to measure it;
    override ``Trainer._get_train_sampler`` to return this instead.
    """
    from transformers.trainer_pt_utils import LengthGroupedSampler

    return LengthGroupedSampler(batch_size, lengths=dataset.lengths.tolist(), generator=generator)
