"""OpenAI's chat format: ``{"messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"},
{"type": "image_url", "image_url": {"url": "https://..."}}]}, {"role": "assistant", "content": "A cat."}]}``, one
conversation per line (JSON Lines, or a JSON list).

It is what OpenAI's chat and vision fine-tuning files hold (as they are: an assistant message may carry
``"weight": 0`` or ``1``), what many datasets and labelling tools export, and what ``serve --log-requests``
writes (its extra keys, ``model``, ``created``, ``finish_reason``, ``usage``, are ignored; its ``id`` names the
sample).

- ``content`` is a string or a list of parts: ``{"type": "text", "text"}`` parts are joined in order and each
  ``{"type": "image_url", "image_url": {"url", "detail"}}`` becomes ``Picture k: <img>...</img>\\n`` at its place,
  ``k`` counted over the whole conversation (``detail`` has no counterpart: Qwen-VL sees every picture at its one
  resolution). Pictures are accepted in user messages only.
- A ``system`` (or ``developer``) message, first only, becomes the sample's system turn. Consecutive user
  messages are joined into one turn (OpenAI's own vision example sends the question and the picture as two user
  messages), a line break between them; after that the turns must alternate user / assistant as our rules
  require. Tool and function messages, ``tool_calls`` and a ``tools`` list are refused: the format has no such
  turns.
- ``"weight": 0`` on an assistant message keeps it as context, untrained: it is written ``"train": false`` (see
  :mod:`qwenvl_train.data.engine.records`); ``1`` (or none) trains it.
- Image URLs: ``data:image/...;base64,`` pictures are decoded and written once under ``--images-out`` by their
  content hash (required when the data holds any); ``http(s)`` URLs are kept as they are (the image loader
  fetches them with its guards) unless ``--download`` is given, which fetches each once with the server's
  guarded fetcher into ``--images-out``; a path (or ``file://`` URL) resolves against ``--image-root`` (default:
  the source file's folder), as ``serve --log-requests`` writes its pictures.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...format.markup import image_markup
from ..data_url import DataURLError, data_url_bytes
from .common import (
    Conversion,
    ConvertError,
    RecordError,
    SourceRecord,
    json_items,
    markup,
    require,
    sample,
    turn,
    type_name,
)

#: ``--images-out`` is accepted: data URLs (and ``--download``) write pictures.
WRITES_IMAGES = True
SYSTEM_ROLES = ("system", "developer")
TOOL_KEYS = ("tools", "functions")

#: What ``--download`` fetches with: the URL -> its bytes, a :class:`RecordError` when it cannot (the command
#: gives the server's guarded fetcher).
Fetch = Callable[[str], bytes]


def items(source: Path, job: Conversion) -> Any:
    """The records of an OpenAI chat JSON Lines (or JSON list) file."""
    return json_items(source)


def setup(options: dict[str, Any], sources: list[Path]) -> list[Path]:
    """``--download`` needs ``--images-out`` (where the fetched pictures go) and the fetcher the command gives."""
    if options.get("download"):
        if options.get("images_out") is None:
            raise ConvertError("--download writes the pictures it fetches: give --images-out DIR too")
        if options.get("fetch") is None:
            raise ConvertError("--download has no fetcher")
    return sources


def picture_path(url: str, job: Conversion, where: str) -> str:
    """The path (or URL) to write for the picture ``url`` names (see the module docstring)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        try:
            data = data_url_bytes(url)
        except DataURLError as exc:
            raise RecordError(f"{where}: {exc}", "bad image") from None
        return job.image_bytes(data)[0]
    if scheme in ("http", "https"):
        if not job.options.get("download"):
            return url
        fetch: Fetch = job.options["fetch"]
        return job.image_bytes(fetch(url))[0]
    if scheme == "file":
        url = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    elif len(scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise RecordError(f"{where}: unsupported image URL scheme {scheme!r}", "bad image")
    return job.image(url)


class Pictures:
    """The pictures of one conversation, numbered in order over all its messages."""

    def __init__(self, job: Conversion) -> None:
        self.job = job
        self.count = 0

    def markup(self, url: str, where: str) -> str:
        """``Picture k: <img>path</img>\\n`` for the next picture."""
        self.count += 1
        return markup(image_markup, self.count, picture_path(url, self.job, where))


def part_url(part: dict[str, Any], where: str) -> str:
    """The URL of an ``image_url`` part (``{"url": ...}``, or the URL itself as some exporters write it)."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url.strip():
        raise RecordError(f"{where}: 'image_url.url' is {url!r}, expected a URL", "bad structure")
    return url


def content_text(content: Any, where: str, pictures: Pictures | None) -> str:
    """A message's content as one text, its pictures as markup at their places (``pictures`` None: none
    allowed, as in an assistant or system message).

    Raises:
        RecordError: a content that is neither a string nor a list of parts, an unknown part, a picture where
            none is allowed.
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RecordError(
            f"{where}: 'content' is a {type_name(content)}, expected a string or a list of parts",
            "bad structure",
        )
    text = ""
    for j, part in enumerate(content):
        at = f"{where} part {j}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text += require(part, "text", str, f"{at}: 'text'")
        elif kind == "image_url":
            if pictures is None:
                raise RecordError(f"{at}: a picture outside a user message", "picture in answer")
            text += pictures.markup(part_url(part, at), at)
        elif kind in ("input_audio", "audio", "video_url", "file"):
            raise RecordError(f"{at}: a {kind!r} part: Qwen-VL takes pictures only", "videos or audio")
        else:
            raise RecordError(
                f"{at}: unsupported part type {kind!r} (expected 'text' or 'image_url')", "bad structure"
            )
    return text


def trained(message: dict[str, Any], role: str, where: str) -> bool:
    """Whether an assistant message is trained: its ``weight`` (0 or 1, default 1); others take none."""
    if "weight" not in message:
        return True
    weight = message["weight"]
    if role != "assistant":
        raise RecordError(
            f"{where}: 'weight' on a {role} message (only assistant messages are trained)", "bad weight"
        )
    if isinstance(weight, bool) or weight not in (0, 1):
        raise RecordError(f"{where}: 'weight' is {weight!r}, expected 0 or 1", "bad weight")
    return weight == 1


def convert(item: SourceRecord, job: Conversion) -> list[dict[str, Any]]:
    """One OpenAI chat record as one sample."""
    value = item.value
    messages = require(value, "messages", list)
    for key in TOOL_KEYS:
        if value.get(key):
            raise RecordError(
                f"{key!r}: tool and function calling have no turns in Qwen-VL's format", "tools"
            )
    if not messages:
        raise RecordError("empty 'messages'", "bad structure")
    pictures = Pictures(job)
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"message {i}"
        role = require(message, "role", str, f"{where}: 'role'")
        if role not in (*SYSTEM_ROLES, "user", "assistant"):
            raise RecordError(
                f"{where}: role {role!r} is not supported (expected system, user or assistant)",
                "unknown role",
            )
        if message.get("tool_calls") or message.get("function_call"):
            raise RecordError(f"{where}: tool calls have no turns in Qwen-VL's format", "tools")
        is_trained = trained(message, role, where)
        content = require(message, "content", (str, list), f"{where}: 'content'")
        if role in SYSTEM_ROLES:
            if i:
                raise RecordError(f"{where}: a {role} message is only allowed first", "bad structure")
            out.append(turn("system", content_text(content, where, None)))
        elif role == "user":
            text = content_text(content, where, pictures)
            if out and out[-1]["from"] == "user":  # the question and its picture as two messages
                previous = out[-1]["value"]
                out[-1]["value"] = previous + ("" if not previous or previous.endswith("\n") else "\n") + text
            else:
                out.append(turn("user", text))
        else:
            out.append(turn("assistant", content_text(content, where, None), is_trained))
    return [sample(item.id or f"{job.source.stem}-{item.index}", out)]
