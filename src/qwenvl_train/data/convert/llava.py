"""LLaVA's format: ``{"id", "image": "rel/path.jpg" | [...], "conversations": [{"from": "human", "value":
"<image>\\nWhat is this?"}, {"from": "gpt", "value": "A cat."}]}``, as a JSON list or JSON Lines.

Each ``<image>`` placeholder becomes ``Picture N: <img>path</img>\\n`` at its place (the line break after it is
taken into the picture's own), the images in the order ``image`` lists them; there must be as many placeholders
as images, and only in human turns. Roles: ``human``, ``gpt`` and a first ``system`` turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import (
    IMAGE_PLACEHOLDER,
    Conversion,
    RecordError,
    SourceRecord,
    fill_images,
    json_items,
    require,
    sample,
    turn,
)

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def items(source: Path, job: Conversion) -> Any:
    """The records of a LLaVA JSON or JSON Lines file."""
    return json_items(source)


def image_list(value: Any, key: str) -> list[str]:
    """The images a record names under ``key``: none, one path, or a list of paths."""
    if not isinstance(value, dict) or value.get(key) is None:
        return []
    images = value[key]
    images = [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not all(isinstance(p, str) and p.strip() for p in images):
        raise RecordError(f"{key!r} is {images!r}, expected a path or a list of paths", "bad structure")
    return images


def conversation(
    turns: list[Any],
    roles: dict[str, str],
    paths: list[str],
    role_key: str = "from",
    value_key: str = "value",
    missing_first: bool = False,
) -> list[dict[str, Any]]:
    """The output turns of ``turns`` (objects with ``role_key``/``value_key``), ``<image>`` placeholders filled
    with ``paths`` in order. Shared with the ShareGPT and ms-swift readers.

    With ``missing_first`` (ms-swift's rule), images without a placeholder open the first user turn, in order.

    Raises:
        RecordError: a turn of the wrong shape, an unknown role, a placeholder outside a user turn, or not as
            many placeholders as images.
    """
    if not turns:
        raise RecordError("empty conversation", "bad structure")
    out: list[dict[str, Any]] = []
    used = 0
    placeholders = sum(
        t.get(value_key, "").count(IMAGE_PLACEHOLDER)
        for t in turns
        if isinstance(t, dict) and isinstance(t.get(value_key), str)
    )
    if missing_first and placeholders < len(paths):
        turns = [dict(t) for t in turns]
        first = next((t for t in turns if roles.get(t.get(role_key)) == "user"), None)
        if first is not None and isinstance(first.get(value_key), str):
            first[value_key] = IMAGE_PLACEHOLDER * (len(paths) - placeholders) + first[value_key]
            placeholders = len(paths)
    if placeholders != len(paths):
        raise RecordError(
            f"{placeholders} {IMAGE_PLACEHOLDER} placeholder(s) for {len(paths)} image(s)",
            "placeholder count",
        )
    for i, t in enumerate(turns):
        role = require(t, role_key, str, f"turn {i}: {role_key!r}")
        value = require(t, value_key, str, f"turn {i}: {value_key!r}")
        resolved = roles.get(role) or roles.get(role.lower())
        if resolved is None:
            known = ", ".join(sorted(roles))
            raise RecordError(f"turn {i}: unknown role {role!r} (expected {known})", "unknown role")
        if resolved == "system" and i:
            raise RecordError(f"turn {i}: a system turn is only allowed first", "bad structure")
        n = value.count(IMAGE_PLACEHOLDER)
        if n and resolved != "user":
            raise RecordError(
                f"turn {i}: {IMAGE_PLACEHOLDER} in a {role!r} turn (images go in user turns)",
                "placeholder in answer",
            )
        out.append(turn(resolved, fill_images(value, paths[used : used + n], used + 1)))
        used += n
    return out


def convert(item: SourceRecord, job: Conversion) -> list[dict[str, Any]]:
    """One LLaVA record as one sample."""
    conv = require(item.value, "conversations", list)
    paths = [job.image(p) for p in image_list(item.value, "image")]
    return [sample(item.id or f"{job.source.stem}-{item.index}", conversation(conv, ROLES, paths))]
