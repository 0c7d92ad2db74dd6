"""LLaMA-Factory's ShareGPT format: ``{"messages": [{"role": "user", "content": "<image>What is this?"}, ...],
"images": ["a.jpg"]}``, or the ``{"conversations": [{"from": "human", "value": ...}]}`` variant, as a JSON list
or JSON Lines; an optional ``system`` column holds the system prompt.

Without ``--dataset-info`` the layout is read from each record: ``messages`` with ``role``/``content`` and the
roles ``user``/``assistant``/``system``, else ``conversations`` with ``from``/``value`` and ``human``/``gpt``/
``system``. With ``--dataset-info dataset_info.json --dataset NAME`` the entry's ``columns`` and ``tags`` name
them (LLaMA-Factory's defaults for what the entry leaves out), and its ``file_name`` is the source when no SRC is
given. The ``<image>`` placeholders are filled with the images in order; there must be as many as images.

Typed content (LLaMA-Factory v1's ``data/v1_multimodal_demo.jsonl``, and the OpenAI-like exports): a turn's
content may be a list of parts, ``{"type": "text", "value" | "text": ...}`` and ``{"type": "image_url" | "image",
"value" | "image_url" | "image": path or {"url": path}}``, each picture taking its place among the text as an
``<image>`` placeholder would (the record then names its pictures in its parts, not in an ``images`` column).
LLaMA-Factory v1's per-message ``loss_weight`` is read too: ``0`` on an assistant turn keeps it as context,
untrained (written ``"train": false``); user and system turns take only ``0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    IMAGE_PLACEHOLDER,
    Conversion,
    ConvertError,
    RecordError,
    SourceError,
    SourceRecord,
    json_items,
    load_json,
    no_other_media,
    require,
    sample,
    turn,
)
from .llava import conversation, image_list


@dataclass(frozen=True)
class Layout:
    """Where a record keeps its turns, images and system prompt, and how its turns name roles."""

    messages: str = "conversations"
    images: str = "images"
    system: str = "system"
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    system_tag: str = "system"

    @property
    def roles(self) -> dict[str, str]:
        return {self.user_tag: "user", self.assistant_tag: "assistant", self.system_tag: "system"}


MESSAGES = Layout(
    "messages", role_tag="role", content_tag="content", user_tag="user", assistant_tag="assistant"
)
CONVERSATIONS = Layout()


def dataset_layout(info_file: Path, name: str | None) -> tuple[Layout, Path]:
    """The layout of dataset ``name`` in a LLaMA-Factory ``dataset_info.json`` (or a v1 dataset ``.yaml``), and
    its data file.

    Raises:
        ConvertError: unreadable file, no such dataset, not sharegpt, or unknown column/tag names.
    """
    if info_file.suffix.lower() in (".yaml", ".yml"):
        return v1_layout(info_file, name)
    try:
        info = load_json(info_file)
    except SourceError as exc:
        raise ConvertError(f"{info_file}: {exc}") from None
    name, entry = _entry(info, info_file, name)
    if entry.get("formatting", "alpaca") != "sharegpt":
        raise ConvertError(
            f"{info_file}: dataset {name!r} has formatting {entry.get('formatting', 'alpaca')!r}, not 'sharegpt'"
        )
    fields = {**entry.get("columns", {}), **entry.get("tags", {})}
    known = set(Layout.__dataclass_fields__)
    unknown = sorted(set(fields) - known - {"videos", "audios", "tools"})
    if unknown:
        raise ConvertError(f"{info_file}: dataset {name!r}: unsupported column or tag {unknown[0]!r}")
    layout = Layout(**{k: v for k, v in fields.items() if k in known})
    return layout, info_file.parent / str(entry.get("file_name", ""))


def _entry(info: Any, info_file: Path, name: str | None) -> tuple[str, Any]:
    """The dataset ``name`` of a dataset file (the only one when ``name`` is None), with its name."""
    if not isinstance(info, dict):
        raise ConvertError(f"{info_file}: expected an object of datasets")
    if name is None:
        if len(info) != 1:
            raise ConvertError(f"{info_file}: holds {len(info)} datasets; name one with --dataset")
        (name,) = info
    if name not in info or not isinstance(info[name], dict):
        raise ConvertError(f"{info_file}: no dataset {name!r} (it has: {', '.join(sorted(info)) or 'none'})")
    return name, info[name]


def v1_layout(info_file: Path, name: str | None) -> tuple[Layout, Path]:
    """A LLaMA-Factory v1 dataset ``.yaml`` entry (``path``, ``source: local``, no ``converter``): the ``messages``
    layout, and its file (``path`` as LLaMA-Factory reads it, from the current folder; else from the yaml's).

    Raises:
        ConvertError: unreadable yaml, no such dataset, not a local file, or a converter other than none.
    """
    import yaml

    try:
        with open(info_file, encoding="utf-8") as fh:
            info = yaml.safe_load(fh)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConvertError(f"{info_file}: cannot read: {' '.join(str(exc).split())}") from None
    name, entry = _entry(info, info_file, name)
    if entry.get("source", "local") != "local":
        raise ConvertError(
            f"{info_file}: dataset {name!r} has source {entry['source']!r}: only local files are read"
        )
    if entry.get("converter") is not None:
        raise ConvertError(
            f"{info_file}: dataset {name!r} has converter {entry['converter']!r}: only the messages layout is read"
        )
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        raise ConvertError(f"{info_file}: dataset {name!r} has no 'path'")
    data_file = Path(path)
    if not data_file.is_absolute() and not data_file.exists():
        data_file = info_file.parent / path
    return MESSAGES, data_file


def items(source: Path, job: Conversion) -> Any:
    """The records of a ShareGPT JSON or JSON Lines file."""
    return json_items(source)


def convert(item: SourceRecord, job: Conversion) -> list[dict[str, Any]]:
    """One ShareGPT record as one sample."""
    layout: Layout | None = job.options.get("layout")
    value = item.value
    if layout is None:
        layout = MESSAGES if isinstance(value, dict) and "messages" in value else CONVERSATIONS
    turns = require(value, layout.messages, list)
    no_other_media(value)
    refs = image_list(value, layout.images)
    if any(isinstance(t, dict) and isinstance(t.get(layout.content_tag), list) for t in turns):
        turns, inline = typed_turns(turns, layout.content_tag)
        if inline and refs:
            raise RecordError(
                f"pictures both in {layout.images!r} and in the content parts: name each once",
                "bad structure",
            )
        refs = refs or inline
    paths = [job.image(p) for p in refs]
    out = conversation(turns, layout.roles, paths, layout.role_tag, layout.content_tag)
    for i, (t, written) in enumerate(zip(turns, out, strict=True)):
        written.update(loss_weight(t, written["from"], i))
    system = value.get(layout.system)
    if system is not None:
        if not isinstance(system, str):
            raise RecordError(f"{layout.system!r} is {system!r}, expected a string", "bad structure")
        if out[0]["from"] == "system":
            raise RecordError(
                f"a system prompt both in {layout.system!r} and as the first turn", "bad structure"
            )
        if system:
            out.insert(0, turn("system", system))
    return [sample(item.id or f"{job.source.stem}-{item.index}", out)]


TEXT_PARTS = ("text",)
IMAGE_PARTS = ("image_url", "image")
OTHER_MEDIA = ("video", "video_url", "audio", "audio_url", "input_audio")


def typed_turns(turns: list[Any], content_tag: str) -> tuple[list[Any], list[str]]:
    """``turns`` with every list of typed parts written as one text, a picture as an ``<image>`` placeholder at its
    place, and the pictures' paths in order.

    Raises:
        RecordError: an unknown part, a picture path that is not a string, video or audio, or a literal
            ``<image>`` in a text part (the pictures are parts here).
    """
    out: list[Any] = []
    paths: list[str] = []
    for i, t in enumerate(turns):
        content = t.get(content_tag) if isinstance(t, dict) else None
        if not isinstance(content, list):
            out.append(t)
            continue
        text = ""
        for j, part in enumerate(content):
            where = f"turn {i} part {j}"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in TEXT_PARTS:
                piece = part.get("value", part.get("text"))
                if not isinstance(piece, str):
                    raise RecordError(f"{where}: the text is {piece!r}, expected a string", "bad structure")
                if IMAGE_PLACEHOLDER in piece:
                    raise RecordError(
                        f"{where}: {IMAGE_PLACEHOLDER} in a text part (pictures are image parts here)",
                        "placeholder count",
                    )
                text += piece
            elif kind in IMAGE_PARTS:
                ref = next((part[k] for k in ("value", kind, "url") if part.get(k) is not None), None)
                ref = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(ref, str) or not ref.strip():
                    raise RecordError(f"{where}: the picture is {ref!r}, expected a path", "bad structure")
                paths.append(ref)
                text += IMAGE_PLACEHOLDER
            elif kind in OTHER_MEDIA:
                raise RecordError(f"{where}: a {kind!r} part: Qwen-VL takes pictures only", "videos or audio")
            else:
                raise RecordError(
                    f"{where}: unsupported part type {kind!r} (expected text, image_url or image)",
                    "bad structure",
                )
        out.append({**t, content_tag: text})
    return out, paths


def loss_weight(t: Any, role: str, index: int) -> dict[str, Any]:
    """What a turn's ``loss_weight`` (LLaMA-Factory v1) adds to the written turn: ``{"train": False}`` for 0 on an
    assistant turn, nothing otherwise.

    Raises:
        RecordError: a weight other than 0 or 1, or one that would train a user or system turn.
    """
    weight = t.get("loss_weight") if isinstance(t, dict) else None
    if weight is None:
        return {}
    if isinstance(weight, bool) or weight not in (0, 1):
        raise RecordError(f"turn {index}: 'loss_weight' is {weight!r}, expected 0 or 1", "bad weight")
    if role != "assistant":
        if weight:
            raise RecordError(
                f"turn {index}: 'loss_weight' {weight!r} on a {role} turn: only assistant turns are trained",
                "bad weight",
            )
        return {}
    return {} if weight else {"train": False}


def setup(options: dict[str, Any], sources: list[Path]) -> list[Path]:
    """Read ``--dataset-info`` into ``options["layout"]``; its data file is the source when none is given."""
    info = options.get("dataset_info")
    if info is None:
        if options.get("dataset") is not None:
            raise ConvertError("--dataset names an entry of --dataset-info: give that file too")
        return sources
    layout, data_file = dataset_layout(Path(info), options.get("dataset"))
    options["layout"] = layout
    return sources or [data_file]
