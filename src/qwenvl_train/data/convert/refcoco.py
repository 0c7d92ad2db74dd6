"""RefCOCO / RefCOCO+ / RefCOCOg: one grounding conversation per referring expression.

    user:      Picture 1: <img>COCO_train2014_000000000042.jpg</img>\\nWhere is the man on the left in the picture?
    assistant: <ref>man on the left</ref><box>(x1,y1),(x2,y2)</box>

Two layouts:

- refs and instances (the original release): SRC is the refs as JSON (a list, or JSON Lines, of ``{"ref_id",
  "ann_id", "image_id", "sentences": [{"sent": ...}], "split"}``; the release's ``refs(unc).p`` is a pickle, which
  this command does not load: ``python -c "import json, pickle; json.dump(pickle.load(open('refs(unc).p',
  'rb')), open('refs.json', 'w'))"``) and ``--instances`` the COCO instances file its ``ann_id`` and
  ``image_id`` name;
- the common exports, JSON, JSON Lines or parquet (a ``.parquet`` SRC, read in batches): one record per object,
  ``{"file_name" or "image": path, "bbox": [x, y, width, height], "sentences": [...]}`` (each sentence a string
  or ``{"sent"}``; ``"sentence"`` or ``"expression"`` for a single one); an ``image`` carrying ``{bytes, path}``
  (Hugging Face's image feature) is written once to ``--images-out`` when that is given, else its path is used.

Boxes are ``[x, y, width, height]`` in pixels, converted with the image's real size (its header; in the first
layout the instances file's size must agree). ``--split`` keeps the refs of one split and counts the others.
Questions as for COCO (``--question``, ``--lang``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .coco import checked_size, grounding, load_instances
from .coco import setup as coco_setup
from .common import Conversion, ConvertError, RecordError, SourceRecord, json_items, record_id


def setup(options: dict[str, Any], sources: list[Path]) -> list[Path]:
    """Load ``--instances`` (its images and annotations by id) and check the question templates."""
    if options.get("instances") is not None:
        if options.get("images_out") is not None:
            raise ConvertError("--images-out is for exports carrying image bytes, not refs with --instances")
        images, _, annotations = load_instances(Path(options["instances"]))
        options["coco"] = (images, {a.get("id"): a for a in annotations if isinstance(a, dict)})
    return coco_setup(options, sources)


WRITES_IMAGES = True  # a parquet export may carry the pictures
COLUMNS = ("id", "ref_id", "ann_id", "image_id", "split", "file_name", "image", "bbox", "sentences", "sentence",
           "expression")  # fmt: skip


def _parquet_items(source: Path, job: Conversion) -> Any:
    from .parquet import open_parquet, rows

    parquet = open_parquet(source)
    names = set(parquet.schema_arrow.names)
    for index, row in rows(parquet, job, [c for c in COLUMNS if c in names]):
        yield SourceRecord(row, None, index, record_id(row))


def items(source: Path, job: Conversion) -> Any:
    """The refs or exported records of a JSON, JSON Lines or parquet file."""
    found = _parquet_items(source, job) if source.suffix.lower() == ".parquet" else json_items(source)
    for item in found:
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


def _picture(value: dict[str, Any], job: Conversion) -> tuple[str, tuple[int, int]]:
    """The written path and size of an exported record's picture: its bytes (written to ``--images-out``) when
    it carries them and that folder is given, else its path (``file_name``, or ``image`` as a path)."""
    image = value.get("image")
    data = image.get("bytes") if isinstance(image, dict) else None
    if data and job.images_out is not None:
        return job.image_bytes(data)
    path = value.get("file_name")
    if not isinstance(path, str) or not path:
        path = image.get("path") if isinstance(image, dict) else image
    if isinstance(path, str) and path:
        return job.image(path), job.size(path)
    if data:
        return job.image_bytes(data)  # says to give --images-out
    raise RecordError("no picture ('file_name' or 'image'); refs need --instances", "bad structure")


def convert(item: SourceRecord, job: Conversion) -> list[dict[str, Any]]:
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
        size, path, box = checked_size(job, image), job.image(image["file_name"]), ann.get("bbox")
    else:
        path, size = _picture(value, job)
        box = value.get("bbox")
    base = item.id or f"{job.source.stem}-{item.index}"
    texts = sentences(value)
    qwen = job.qwen_box(box, "xywh", size)
    return [
        grounding(job, item._replace(id=f"{base}-{k}", index=item.index + k), path, text, [qwen])
        for k, text in enumerate(texts)
    ]
