"""Hugging Face datasets saved as parquet, images stored as ``{bytes, path}`` (the ``Image`` feature).

Two layouts, told apart by the columns:

- TRL / llava-instruct-mix: ``messages`` (``[{"role", "content": [{"type": "image"}, {"type": "text", "text":
  ...}]}]``, or ``content`` as plain text) and ``images``; each ``{"type": "image"}`` item becomes ``Picture N:
  <img>path</img>\\n`` at its place, the images taken in order (as many items as images);
- the_cauldron: ``images`` and ``texts`` (``[{"user", "assistant"}]``); the pictures open the first user turn.

Image bytes are written once to ``--images-out`` under their content hash
(:meth:`.common.Conversion.image_bytes`); an image without bytes but with a ``path`` is used from there (resolved
like any other path). The file is read with
pyarrow in batches of rows (``--batch-size``), so a file larger than memory converts. Records are named by their
0-based row (``#N``); an ``id`` column gives the sample ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...format.markup import image_markup
from .common import Conversion, RecordError, SourceError, SourceRecord, markup, sample, turn

WRITES_IMAGES = True
ROLES = {"user": "user", "assistant": "assistant", "system": "system"}
DEFAULT_BATCH = 64


def open_parquet(source: Path) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` (rows not read yet).

    Raises:
        SourceError: no pyarrow, no such file, not parquet.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError(
            "reading parquet needs pyarrow: pip install pyarrow (or the 'convert' extra)"
        ) from None
    try:
        return pq.ParquetFile(source)
    except FileNotFoundError:
        raise SourceError("no such file") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors for a file that is not parquet vary
        raise SourceError(f"cannot read as parquet ({type(exc).__name__}: {exc})") from None


def rows(parquet: Any, job: Conversion, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(index, row)`` of every row, ``columns`` only, read ``--batch-size`` rows at a time."""
    index = 0
    for batch in parquet.iter_batches(
        batch_size=job.options.get("batch_size") or DEFAULT_BATCH, columns=columns
    ):
        for row in batch.to_pylist():
            yield index, row
            index += 1


def items(source: Path, job: Conversion) -> Any:
    """The rows of a parquet file, batch by batch, each with the file's layout."""
    parquet = open_parquet(source)
    names = set(parquet.schema_arrow.names)
    if {"messages", "images"} <= names:
        layout = "messages"
    elif {"texts", "images"} <= names:
        layout = "texts"
    else:
        raise SourceError(
            f"unknown layout (columns: {', '.join(sorted(names))}); expected messages + images (TRL) or "
            "texts + images (the_cauldron)"
        )
    for index, row in rows(parquet, job, [c for c in (layout, "images", "id") if c in names]):
        raw_id = row.get("id")
        yield SourceRecord(
            (layout, row), None, index, str(raw_id) if isinstance(raw_id, (str, int)) else None
        )


def _images(job: Conversion, row: dict[str, Any]) -> list[str]:
    """The written path of each image of the row."""
    images = row.get("images") or []
    if not isinstance(images, list):
        raise RecordError(f"'images' is {type(images).__name__}, expected a list", "bad structure")
    paths = []
    for i, image in enumerate(images):
        data = image.get("bytes") if isinstance(image, dict) else None
        path = image.get("path") if isinstance(image, dict) else None
        if data:
            paths.append(job.image_bytes(data)[0])
        elif isinstance(path, str) and path:
            paths.append(job.image(path))
        else:
            raise RecordError(f"images[{i}] has neither bytes nor a path", "bad image")
    return paths


def _messages(row: dict[str, Any], paths: list[str]) -> list[dict[str, str]]:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RecordError("'messages' is empty or not a list", "bad structure")
    wanted = sum(
        1
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image"
    )
    if wanted != len(paths):
        raise RecordError(
            f"{wanted} image item(s) in 'messages' for {len(paths)} image(s)", "placeholder count"
        )
    out, used = [], 0
    for i, m in enumerate(messages):
        role = ROLES.get(m.get("role")) if isinstance(m, dict) else None
        if role is None:
            raise RecordError(
                f"turn {i}: role {m.get('role') if isinstance(m, dict) else m!r} (expected user, assistant, system)",
                "unknown role",
            )
        content = m.get("content")
        if isinstance(content, str):
            out.append(turn(role, content))
            continue
        if not isinstance(content, list):
            raise RecordError(f"turn {i}: 'content' is neither text nor a list of parts", "bad structure")
        text = ""
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                if role != "user":
                    raise RecordError(
                        f"turn {i}: an image in a {role!r} turn (images go in user turns)",
                        "placeholder in answer",
                    )
                used += 1
                text += markup(image_markup, used, paths[used - 1])
            elif kind == "text" and isinstance(part.get("text"), str):
                text += part["text"]
            else:
                raise RecordError(
                    f"turn {i}: a content part {part!r} that is neither text nor image", "bad structure"
                )
        out.append(turn(role, text))
    return out


def _texts(row: dict[str, Any], paths: list[str]) -> list[dict[str, str]]:
    texts = row.get("texts")
    if not isinstance(texts, list) or not texts:
        raise RecordError("'texts' is empty or not a list", "bad structure")
    out = []
    for i, pair in enumerate(texts):
        if not isinstance(pair, dict) or not all(isinstance(pair.get(k), str) for k in ("user", "assistant")):
            raise RecordError(
                f"texts[{i}] is not an object with 'user' and 'assistant' text", "bad structure"
            )
        pictures = "".join(markup(image_markup, n + 1, p) for n, p in enumerate(paths)) if i == 0 else ""
        out += [turn("user", pictures + pair["user"]), turn("assistant", pair["assistant"])]
    return out


def convert(item: SourceRecord, job: Conversion) -> list[dict[str, Any]]:
    """One row as one sample."""
    layout, row = item.value
    paths = _images(job, row)
    turns = _messages(row, paths) if layout == "messages" else _texts(row, paths)
    return [sample(item.id or f"{job.source.stem}-{item.index}", turns)]
