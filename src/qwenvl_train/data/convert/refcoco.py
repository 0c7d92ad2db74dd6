"""RefCOCO / RefCOCO+ / RefCOCOg: one grounding conversation per referring expression.

    user:      Picture 1: <img>COCO_train2014_000000000042.jpg</img>\\nWhere is the man on the left in the picture?
    assistant: <ref>man on the left</ref><box>(x1,y1),(x2,y2)</box>

Two layouts:

- refs and instances (the original release): SRC is the refs as JSON (a list, or JSON Lines, of ``{"ref_id",
  "ann_id", "image_id", "sentences": [{"sent": ...}], "split"}``; the release's ``refs(unc).p`` is a pickle, which
  this command does not load: ``python -c "import json, pickle; json.dump(pickle.load(open('refs(unc).p',
  'rb')), open('refs.json', 'w'))"``) and ``--instances`` the COCO instances file its ``ann_id`` and
  ``image_id`` name;
- the common JSON exports: one record per object, ``{"file_name" or "image": path, "bbox": [x, y, width,
  height], "sentences": [...]}`` (each sentence a string or ``{"sent"}``; ``"sentence"`` or ``"expression"`` for
  a single one).

Boxes are ``[x, y, width, height]`` in pixels, converted with the image's real size (its header; in the first
layout the instances file's size must agree). ``--split`` keeps the refs of one split and counts the others.
Questions as for COCO (``--question``, ``--lang``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .coco import checked_size, grounding, load_instances
from .coco import setup as coco_setup
from .common import Item, Job, RecordError, json_items


def setup(options: dict[str, Any], sources: list[Path]) -> list[Path]:
    """Load ``--instances`` (its images and annotations by id) and check the question templates."""
    if options.get("instances") is not None:
        images, _, annotations = load_instances(Path(options["instances"]))
        options["coco"] = (images, {a.get("id"): a for a in annotations if isinstance(a, dict)})
    return coco_setup(options, sources)


def items(source: Path, job: Job) -> Any:
    """The refs or exported records of a JSON or JSON Lines file."""
    for item in json_items(source):
        ref_id = item.value.get("ref_id") if isinstance(item.value, dict) else None
        yield item._replace(id=item.id or (f"ref{ref_id}" if isinstance(ref_id, int) else None))


def sentences(value: dict[str, Any]) -> list[str]:
    """The referring expressions of a record."""
    found = value.get("sentences")
    if found is None:
        single = value.get("sentence", value.get("expression"))
        found = [single] if single is not None else None
    if not isinstance(found, list) or not found:
        raise RecordError(
            "no referring expression ('sentences', 'sentence' or 'expression')", "bad structure"
        )
    out = []
    for i, s in enumerate(found):
        text = s.get("sent", s.get("raw")) if isinstance(s, dict) else s
        if not isinstance(text, str) or not text.strip():
            raise RecordError(f"sentence {i} is {s!r}, expected text", "bad structure")
        out.append(text.strip())
    return out


def convert(item: Item, job: Job) -> list[dict[str, Any]]:
    """One ref (or exported object) as one conversation per expression."""
    value = item.value
    if not isinstance(value, dict):
        raise RecordError(f"record is a {type(value).__name__}, expected an object", "bad structure")
    split = job.options.get("split")
    if split is not None and value.get("split") != split:
        job.stats.left_out[f"not in split {split!r}"] += 1
        return []
    coco = job.options.get("coco")
    if coco is not None:
        images, annotations = coco
        ann = annotations.get(value.get("ann_id"))
        if ann is None:
            raise RecordError(f"ann_id {value.get('ann_id')!r} is not in --instances", "bad structure")
        image = images.get(value.get("image_id", ann.get("image_id")))
        if image is None:
            raise RecordError(f"image_id {value.get('image_id')!r} is not in --instances", "bad structure")
        size, path, box = checked_size(job, image), image["file_name"], ann.get("bbox")
    else:
        path = value.get("file_name", value.get("image"))
        if not isinstance(path, str):
            raise RecordError(
                "no image path ('file_name' or 'image'); refs need --instances", "bad structure"
            )
        size, box = job.size(path), value.get("bbox")
    base = item.id or f"{job.source.stem}-{item.index}"
    texts = sentences(value)
    qwen = job.qwen_box(box, "xywh", size)
    return [
        grounding(job, item._replace(id=f"{base}-{k}", index=item.index + k), path, text, [qwen])
        for k, text in enumerate(texts)
    ]
