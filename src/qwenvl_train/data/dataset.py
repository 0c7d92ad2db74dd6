"""The training dataset: conversations rendered up front, images loaded in ``__getitem__``.

Usage (what the trainer does)::

    tokenizer = QwenVLTokenizer.from_pretrained(model_dir)
    train = ConversationDataset.from_model(["data/demo.json"], tokenizer, model_dir, max_len=2048)
    print(train.summary)                      # also logged: kept / dropped / cut / errors
    loader = DataLoader(train, batch_size=4, collate_fn=DataCollator(), num_workers=2)

Construction reads every file, renders every sample (ids and labels, no padding) and checks every
image cheaply, so the lengths for length-grouped sampling are known without loading a pixel.

Policies, all counted in :class:`DatasetSummary` and logged at construction, never silent:

- Errors (bad JSON, bad markup, missing or unreadable images...): ``on_error="raise"`` (default) stops
  with the list of one-line errors; ``on_error="skip"`` leaves those samples out and reports how many.
- Images: ``verify_images="header"`` (default) opens every local image at construction (header only:
  existence, directory, format, the decompression-bomb pixel limit; a few hundred microseconds each);
  ``"full"`` decodes them all (catches truncated files too, slower); ``"none"`` trusts the data. URLs are
  only fetched in ``__getitem__`` and by ``check-data``. Whatever slips through (a truncated file, a URL
  that went away) raises :class:`SampleLoadError` naming the file, sample and turn in ``__getitem__``:
  training stops loudly rather than train on a sample without its image. ``check-data`` decodes every
  image, so running it first finds these before training starts.
- Length: ``truncation="drop"`` (default) leaves out samples longer than ``max_len``;
  ``truncation="cut_turns"`` cuts them at the end of the last assistant turn that fits (never inside an
  image span, and at least one assistant turn is kept) and drops those where none fits.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ..model.configuration import VISUAL_DEFAULTS
from .chat import Policy, RenderedSample, RenderError, TextEncoder, render_conversation
from .images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_TIMEOUT,
    ImageError,
    check_image_header,
    image_tensor,
    load_image,
    resolve_image,
)
from .sources import DataError, DataValidationError, RawSample, count_rejected, read_samples

logger = logging.getLogger(__name__)

Truncation = Literal["drop", "cut_turns"]
OnError = Literal["raise", "skip"]
VerifyImages = Literal["header", "full", "none"]
DEFAULT_N_QUERIES: int = VISUAL_DEFAULTS["n_queries"]
DEFAULT_IMAGE_SIZE: int = VISUAL_DEFAULTS["image_size"]


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


@dataclass
class PreparedSample:
    """A rendered sample with image references resolved against its file's folder."""

    raw: RawSample
    rendered: RenderedSample

    def error(self, reason: str, turn: int | None = None) -> DataError:
        """A :class:`DataError` about this sample."""
        return self.raw.error(reason, turn)


def prepare_samples(
    raw_samples: Iterable[RawSample],
    tokenizer: TextEncoder,
    *,
    n_queries: int,
    policy: Policy = "assistant",
    allow_bare_boxes: bool = False,
) -> tuple[list[PreparedSample], list[DataError]]:
    """Render every sample; resolve image paths relative to each sample's file.

    Returns:
        The rendered samples and one error per sample that could not be rendered.
    """
    prepared: list[PreparedSample] = []
    errors: list[DataError] = []
    for raw in raw_samples:
        try:
            rendered = render_conversation(
                raw.turns,
                tokenizer,
                system=raw.system,
                policy=policy,
                n_queries=n_queries,
                allow_bare_boxes=allow_bare_boxes,
            )
        except RenderError as exc:
            errors.append(raw.error(str(exc), exc.turn))
            continue
        rendered.images = [resolve_image(ref, raw.file.parent) for ref in rendered.images]
        prepared.append(PreparedSample(raw, rendered))
    return prepared, errors


@dataclass
class DatasetSummary:
    """What construction did; ``str()`` is the one-line report that is logged."""

    files: int = 0
    samples_read: int = 0
    kept: int = 0
    errors: list[DataError] = field(default_factory=list)
    skipped: int = 0
    unreadable_files: int = 0
    too_long: int = 0
    dropped_too_long: int = 0
    cut: int = 0
    turns_removed: int = 0
    images: int = 0
    control_strings: Counter[str] = field(default_factory=Counter)
    max_len: int = 0
    truncation: str = "drop"
    policy: str = "assistant"

    def __str__(self) -> str:
        parts = [
            f"{self.kept}/{self.samples_read} samples kept from {self.files} file(s)",
            f"policy {self.policy}",
            f"{self.images} images",
            f"{self.too_long} over max_len {self.max_len} ({self.truncation}: "
            f"{self.dropped_too_long} dropped, {self.cut} cut, {self.turns_removed} turns removed)",
        ]
        if self.errors:
            parts.append(f"{len(self.errors)} errors, {self.skipped} samples skipped")
        if self.unreadable_files:
            parts.append(f"{self.unreadable_files} file(s) unreadable")
        if self.control_strings:
            parts.append(f"{sum(self.control_strings.values())} literal control tokens kept as text")
        return "; ".join(parts)


@dataclass
class _Item:
    id: str
    file: str
    input_ids: np.ndarray
    labels: np.ndarray
    images: list[str]
    image_turns: list[int]


class SampleLoadError(RuntimeError):
    """An image failed to load in ``__getitem__`` (the message names file, sample and turn)."""


class ConversationDataset(Dataset):
    """Map-style dataset of rendered conversations (see the module docstring for the policies).

    Args:
        paths: data files (``.json`` / ``.jsonl``), concatenated in order.
        tokenizer: a ``QwenVLTokenizer`` (anything with ``encode_text``).
        n_queries: positions per image span (``vision_settings(model_dir).n_queries``).
        image_size: side of the square model input (``vision_settings(model_dir).image_size``).
        max_len: longest sample in tokens (image spans counted).
        policy: label policy, ``"assistant"`` or ``"reference"``.
        truncation: ``"drop"`` or ``"cut_turns"``.
        on_error: ``"raise"`` or ``"skip"`` bad samples (counted and logged).
        verify_images: ``"header"``, ``"full"`` or ``"none"``.
        allow_bare_boxes: accept ``<box>`` outside a ref context.
        max_image_pixels: decompression-bomb guard.
        image_timeout: seconds for an http(s) image.

    Raises:
        DataValidationError: ``on_error="raise"`` and some sample is bad (lists every error).
        ValueError: no sample is left.
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        tokenizer: TextEncoder,
        *,
        n_queries: int = DEFAULT_N_QUERIES,
        image_size: int = DEFAULT_IMAGE_SIZE,
        max_len: int = 2048,
        policy: Policy = "assistant",
        truncation: Truncation = "drop",
        on_error: OnError = "raise",
        verify_images: VerifyImages = "header",
        allow_bare_boxes: bool = False,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        image_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        for name, value, allowed in (
            ("truncation", truncation, ("drop", "cut_turns")),
            ("on_error", on_error, ("raise", "skip")),
            ("verify_images", verify_images, ("header", "full", "none")),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: choose from {', '.join(allowed)}")
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = [Path(p) for p in paths]
        self.n_queries = n_queries
        self.image_size = image_size
        self.max_image_pixels = max_image_pixels
        self.image_timeout = image_timeout
        summary = DatasetSummary(files=len(paths), max_len=max_len, truncation=truncation, policy=policy)
        self.summary = summary

        raw, errors = read_samples(paths)
        rejected, summary.unreadable_files = count_rejected(errors)
        summary.samples_read = len(raw) + rejected
        prepared, render_errors = prepare_samples(
            raw, tokenizer, n_queries=n_queries, policy=policy, allow_bare_boxes=allow_bare_boxes
        )
        errors += render_errors
        good: list[PreparedSample] = []
        seen: dict[str, str | None] = {}
        progress = tqdm(
            prepared, desc="checking images", unit="sample", disable=None if len(prepared) >= 1000 else True
        )
        for sample in progress:
            image_errors = self._check_images(sample, verify_images, seen)
            errors += image_errors
            if not image_errors:
                good.append(sample)

        summary.errors = errors
        if errors:
            if on_error == "raise":
                raise DataValidationError(errors)
            summary.skipped = summary.samples_read - len(good)
            logger.warning(
                "skipping %d bad sample(s) and %d unreadable file(s) (%d error(s)), e.g. %s",
                summary.skipped,
                summary.unreadable_files,
                len(errors),
                errors[0],
            )

        self.items: list[_Item] = []
        for sample in good:
            rendered = sample.rendered
            summary.control_strings.update(rendered.control_strings)
            if len(rendered) > max_len:
                summary.too_long += 1
                shorter = rendered.cut(max_len) if truncation == "cut_turns" else None
                if shorter is None:
                    summary.dropped_too_long += 1
                    continue
                summary.cut += 1
                summary.turns_removed += rendered.num_turns - shorter.num_turns
                rendered = shorter
            summary.images += len(rendered.images)
            self.items.append(
                _Item(
                    sample.raw.id,
                    str(sample.raw.file),
                    np.asarray(rendered.input_ids, dtype=np.int32),
                    np.asarray(rendered.labels, dtype=np.int32),
                    rendered.images,
                    rendered.image_turns,
                )
            )
        summary.kept = len(self.items)
        self.lengths: list[int] = [len(item.input_ids) for item in self.items]
        changed = summary.too_long or summary.skipped or summary.unreadable_files or summary.control_strings
        (logger.warning if changed else logger.info)("dataset: %s", summary)
        if not self.items:
            raise ValueError(f"no training samples left: {summary}")

    @classmethod
    def from_model(
        cls,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        tokenizer: TextEncoder,
        model: str | os.PathLike[str] | Mapping[str, Any] | Any,
        **kwargs: Any,
    ) -> ConversationDataset:
        """Build with ``n_queries`` / ``image_size`` read from a model directory or config."""
        settings = vision_settings(model)
        return cls(paths, tokenizer, n_queries=settings.n_queries, image_size=settings.image_size, **kwargs)

    def _check_images(
        self, sample: PreparedSample, verify: str, seen: dict[str, str | None]
    ) -> list[DataError]:
        """Errors for this sample's images; ``seen`` remembers each image's verdict (checked once)."""
        errors = []
        for ref, turn in zip(sample.rendered.images, sample.rendered.image_turns, strict=True):
            if ref not in seen:
                try:
                    if verify == "header":
                        check_image_header(ref, max_pixels=self.max_image_pixels)
                    elif verify == "full":
                        load_image(ref, max_pixels=self.max_image_pixels, timeout=self.image_timeout).close()
                    seen[ref] = None
                except ImageError as exc:
                    seen[ref] = str(exc)
            if seen[ref] is not None:
                errors.append(sample.error(seen[ref], turn))
        return errors

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``input_ids``, ``labels`` (int64, unpadded), ``pixel_values`` ([n, 3, S, S] or None), ``id``."""
        item = self.items[index]
        pixel_values = None
        if item.images:
            tensors = []
            for ref, turn in zip(item.images, item.image_turns, strict=True):
                try:
                    tensors.append(
                        image_tensor(
                            ref, self.image_size, max_pixels=self.max_image_pixels, timeout=self.image_timeout
                        )
                    )
                except ImageError as exc:
                    raise SampleLoadError(
                        f"{DataError(item.file, str(exc), item.id, turn)} "
                        "(run `qwenvl-train check-data` to find every such image before training)"
                    ) from None
            pixel_values = torch.stack(tensors)
        return {
            "input_ids": torch.from_numpy(item.input_ids.astype(np.int64)),
            "labels": torch.from_numpy(item.labels.astype(np.int64)),
            "pixel_values": pixel_values,
            "id": item.id,
        }


def length_grouped_sampler(
    dataset: ConversationDataset, batch_size: int, generator: torch.Generator | None = None
) -> torch.utils.data.Sampler:
    """A ``transformers`` ``LengthGroupedSampler`` fed with ``dataset.lengths`` (no image is loaded).

    The Trainer's own ``group_by_length`` would iterate the dataset (loading every image) to measure it;
    override ``Trainer._get_train_sampler`` to return this instead.
    """
    from transformers.trainer_pt_utils import LengthGroupedSampler

    return LengthGroupedSampler(batch_size, lengths=dataset.lengths, generator=generator)
