"""ms-swift's format: ``{"messages": [{"role": "user", "content": "<image>Find <ref-object>"}, {"role":
"assistant", "content": "<bbox>"}], "images": ["a.jpg"], "objects": {"ref": ["the dog"], "bbox": [[x1, y1, x2,
y2]], "bbox_type": "real", "image_id": [0]}}``, as a JSON list or JSON Lines.

The ``<image>`` placeholders are filled with the images in order (images without a placeholder open the first
user turn, as ms-swift adds them); the ``<ref-object>`` placeholders, in reading
order over the whole conversation, with ``<ref>ref[i]</ref>``; the ``<bbox>`` placeholders with
``<box>(x1,y1),(x2,y2)</box>`` of ``bbox[i]`` (a box, or a list of boxes written as a chain), converted from
pixel corners (``bbox_type`` ``real``, the default) or [0, 1] corners (``norm1``) with the real size of image
``image_id[i]`` (default 0). Each kind of placeholder must come as many times as its list has entries.
``objects`` may be written as a JSON string, as ms-swift accepts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...format.markup import box_markup, ref_markup
from .common import Conversion, RecordError, SourceRecord, json_items, markup, no_other_media, require, sample
from .llava import conversation
from .sharegpt import MESSAGES

REF_PLACEHOLDER = "<ref-object>"
BOX_PLACEHOLDER = "<bbox>"
BOX_TYPES = {"real": "xyxy", "norm1": "norm1"}


def items(source: Path, job: Conversion) -> Any:
    """The records of an ms-swift JSON or JSON Lines file."""
    return json_items(source)


def _images(value: dict[str, Any]) -> list[str]:
    images = value.get("images") or []
    images = [images] if isinstance(images, (str, dict)) else images
    paths = []
    for i, image in enumerate(images if isinstance(images, list) else [images]):
        path = image.get("path") if isinstance(image, dict) else image
        if not isinstance(path, str) or not path.strip():
            raise RecordError(f"images[{i}] is {image!r}, expected a path", "bad structure")
        paths.append(path)
    return paths


def _objects(value: dict[str, Any]) -> dict[str, Any]:
    objects = value.get("objects") or {}
    if isinstance(objects, str):
        try:
            objects = json.loads(objects)
        except json.JSONDecodeError as exc:
            raise RecordError(
                f"'objects' is a string that is not JSON ({exc.msg})", "bad structure"
            ) from None
    if not isinstance(objects, dict):
        raise RecordError(f"'objects' is {objects!r}, expected an object", "bad structure")
    return objects


def _replace(text: str, placeholder: str, fills: list[str], start: int) -> tuple[str, int]:
    pieces = text.split(placeholder)
    out = pieces[0]
    for k, piece in enumerate(pieces[1:]):
        out += fills[start + k] + piece
    return out, start + len(pieces) - 1


def convert(item: SourceRecord, job: Conversion) -> list[dict[str, Any]]:
    """One ms-swift record as one sample."""
    value = item.value
    messages = require(value, "messages", list)
    no_other_media(value)
    refs_paths = _images(value)
    paths = [job.image(p) for p in refs_paths]
    turns = conversation(messages, MESSAGES.roles, paths, "role", "content", missing_first=True)
    objects = _objects(value)
    refs = objects.get("ref") or []
    boxes = objects.get("bbox") or []
    kind = objects.get("bbox_type") or "real"
    if kind not in BOX_TYPES:
        raise RecordError(f"bbox_type {kind!r} (expected real or norm1)", "bad box")
    image_ids = objects.get("image_id") or [0] * len(boxes)
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise RecordError(f"objects 'ref' is {refs!r}, expected a list of strings", "bad structure")
    if not isinstance(boxes, list) or not isinstance(image_ids, list) or len(image_ids) != len(boxes):
        raise RecordError("objects 'bbox' and 'image_id' must be lists of the same length", "bad structure")
    text = "".join(t["value"] for t in turns)
    for placeholder, wanted in ((REF_PLACEHOLDER, len(refs)), (BOX_PLACEHOLDER, len(boxes))):
        if text.count(placeholder) != wanted:
            raise RecordError(
                f"{text.count(placeholder)} {placeholder} placeholder(s) for {wanted} object(s)",
                "placeholder count",
            )
    ref_fills = [markup(ref_markup, r) for r in refs]
    box_fills = []
    for i, (box, image_id) in enumerate(zip(boxes, image_ids, strict=True)):
        if not isinstance(image_id, int) or isinstance(image_id, bool) or not 0 <= image_id < len(refs_paths):
            raise RecordError(
                f"bbox {i}: image_id {image_id!r} names no image ({len(refs_paths)} image(s))", "bad box"
            )
        size = job.size(refs_paths[image_id])
        chain = box if isinstance(box, list) and box and all(isinstance(b, list) for b in box) else [box]
        try:
            box_fills.append(
                "".join(markup(box_markup, job.qwen_box(b, BOX_TYPES[kind], size)) for b in chain)
            )
        except RecordError as exc:
            raise RecordError(f"bbox {i}: {exc}", exc.kind) from None
    n_ref = n_box = 0
    for t in turns:
        t["value"], n_ref = _replace(t["value"], REF_PLACEHOLDER, ref_fills, n_ref)
        t["value"], n_box = _replace(t["value"], BOX_PLACEHOLDER, box_fills, n_box)
    return [sample(item.id or f"{job.source.stem}-{item.index}", turns)]
