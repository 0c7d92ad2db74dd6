"""COCO instances (``instances_*.json``: ``images``, ``annotations`` with ``bbox: [x, y, width, height]`` in
pixels, ``categories``): one grounding conversation per image and category.

    user:      Picture 1: <img>000000000042.jpg</img>\\nWhere is the dog in the picture?
    assistant: <ref>dog</ref><box>(x1,y1),(x2,y2)</box><box>...</box>

The boxes of a category's instances (crowd ones too) are chained in the file's order, converted with the
image's real size from its header; a ``width``/``height`` in ``images`` that disagrees with the header is an
error (a rotated or replaced file). Questions are templates with ``{ref}`` (``--question``, repeatable; by
default one English and one Chinese, ``--lang``), taken in turn. Records are the image/category pairs, sorted by
image id then category id; an annotation naming an unknown image or category is a record of its own (an error).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ...format.markup import grounding_markup, image_markup
from .common import Conversion, ConvertError, RecordError, SourceRecord, load_json, markup, sample, turn

QUESTIONS = {"en": ("Where is the {ref} in the picture?",), "zh": ("图中的{ref}在哪里？",)}
QUESTIONS["both"] = QUESTIONS["en"] + QUESTIONS["zh"]


def setup(options: dict[str, Any], sources: list[Path]) -> list[Path]:
    """Check the question templates: ``--question`` s, else those of ``--lang``."""
    templates = options.get("question") or list(QUESTIONS[options.get("lang") or "both"])
    for template in templates:
        if "{ref}" not in template:
            raise ConvertError(f"--question {template!r} has no {{ref}} where the object's name goes")
        try:
            template.format(ref="x")
        except (IndexError, KeyError, ValueError) as exc:
            raise ConvertError(
                f"--question {template!r}: {exc} (write a literal brace as {{{{ or }}}})"
            ) from None
    options["templates"] = templates
    return sources


def question(job: Conversion, index: int, ref: str) -> str:
    """The ``index``-th question (templates taken in turn) about ``ref``."""
    templates = job.options.get("templates") or QUESTIONS["both"]
    return templates[index % len(templates)].format(ref=ref)


def grounding(
    job: Conversion, item: SourceRecord, path: str, ref: str, boxes: list[tuple[int, int, int, int]]
) -> dict[str, Any]:
    """One conversation: the picture (``path`` as the output names it) and a question about ``ref`` (the item's
    turn of the templates), answered with its boxes (Qwen-VL corners)."""
    user = markup(image_markup, 1, path) + question(job, item.index, ref)
    assistant = markup(grounding_markup, ref, boxes)
    return sample(item.id or f"#{item.index}", [turn("user", user), turn("assistant", assistant)])


def _table(document: dict[str, Any], key: str, source: Path) -> dict[Any, dict[str, Any]]:
    rows = document.get(key)
    if not isinstance(rows, list):
        raise ConvertError(
            f"{source}: {key!r} is not a list (a COCO instances file has images, annotations, categories)"
        )
    table = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "id" not in row:
            raise ConvertError(f"{source}: {key}[{i}] is not an object with an 'id'")
        table[row["id"]] = row
    return table


def load_instances(source: Path) -> tuple[dict[Any, Any], dict[Any, Any], list[dict[str, Any]]]:
    """A COCO instances file's images and categories by id, and its annotations."""
    from .common import SourceError

    try:
        document = load_json(source)
    except SourceError as exc:
        raise ConvertError(f"{source}: {exc}") from None
    if not isinstance(document, dict):
        raise ConvertError(f"{source}: expected a COCO instances object")
    images, categories = _table(document, "images", source), _table(document, "categories", source)
    annotations = document.get("annotations")
    if not isinstance(annotations, list):
        raise ConvertError(f"{source}: 'annotations' is not a list")
    return images, categories, annotations


def checked_size(job: Conversion, image: dict[str, Any]) -> tuple[int, int]:
    """The size in the image's header; the instances file's own ``width``/``height`` must agree with it."""
    path = image.get("file_name")
    if not isinstance(path, str):
        raise RecordError(f"image {image.get('id')!r} has no 'file_name'", "bad structure")
    size = job.size(path)
    said = (image.get("width"), image.get("height"))
    if said != (None, None) and tuple(said) != size:
        raise RecordError(
            f"image {path}: the annotations say {said[0]}x{said[1]}, its header {size[0]}x{size[1]}",
            "bad image",
        )
    return size


def id_key(value: Any) -> tuple[int, Any]:
    """Sort key of an id: integers in order, then anything else by its text."""
    return (0, value) if isinstance(value, int) else (1, str(value))


def items(source: Path, job: Conversion) -> Any:
    """One record per image and category (sorted by ids), and one per annotation that names neither."""
    images, categories, annotations = load_instances(source)
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    index = 0
    for i, ann in enumerate(annotations):
        name = f"annotations[{i}]"
        if not isinstance(ann, dict) or "bbox" not in ann:
            yield SourceRecord(
                RecordError(f"{name} is not an annotation with a 'bbox'", "bad structure"), None, index, name
            )
        elif ann.get("image_id") not in images:
            yield SourceRecord(
                RecordError(f"{name}: image_id {ann.get('image_id')!r} is not in 'images'", "bad structure"),
                None,
                index,
                name,
            )
        elif ann.get("category_id") not in categories:
            yield SourceRecord(
                RecordError(
                    f"{name}: category_id {ann.get('category_id')!r} is not in 'categories'", "bad structure"
                ),
                None,
                index,
                name,
            )
        else:
            groups[(ann["image_id"], ann["category_id"])].append(ann)
            continue
        index += 1
    for image_id, category_id in sorted(groups, key=lambda k: (id_key(k[0]), id_key(k[1]))):
        value = (images[image_id], categories[category_id], groups[(image_id, category_id)])
        yield SourceRecord(value, None, index, f"coco-{image_id}-{category_id}")
        index += 1


def convert(item: SourceRecord, job: Conversion) -> list[dict[str, Any]]:
    """One image and category as one conversation."""
    image, category, anns = item.value
    name = category.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RecordError(f"category {category.get('id')!r} has no name", "bad structure")
    size = checked_size(job, image)
    boxes = []
    for ann in anns:
        try:
            boxes.append(job.qwen_box(ann["bbox"], "xywh", size))
        except RecordError as exc:
            raise RecordError(f"annotation {ann.get('id')!r}: {exc}", exc.kind) from None
    return [grounding(job, item, job.image(image["file_name"]), name, boxes)]
