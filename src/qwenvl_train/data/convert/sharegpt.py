"""LLaMA-Factory's ShareGPT format: ``{"messages": [{"role": "user", "content": "<image>What is this?"}, ...],
"images": ["a.jpg"]}``, or the ``{"conversations": [{"from": "human", "value": ...}]}`` variant, as a JSON list
or JSON Lines; an optional ``system`` column holds the system prompt.

Without ``--dataset-info`` the layout is read from each record: ``messages`` with ``role``/``content`` and the
roles ``user``/``assistant``/``system``, else ``conversations`` with ``from``/``value`` and ``human``/``gpt``/
``system``. With ``--dataset-info dataset_info.json --dataset NAME`` the entry's ``columns`` and ``tags`` name
them (LLaMA-Factory's defaults for what the entry leaves out), and its ``file_name`` is the source when no SRC is
given. The ``<image>`` placeholders are filled with the images in order; there must be as many as images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
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
    """The layout of dataset ``name`` in a LLaMA-Factory ``dataset_info.json``, and its data file.

    Raises:
        ConvertError: unreadable file, no such dataset, not sharegpt, or unknown column/tag names.
    """
    try:
        info = load_json(info_file)
    except SourceError as exc:
        raise ConvertError(f"{info_file}: {exc}") from None
    if not isinstance(info, dict):
        raise ConvertError(f"{info_file}: expected an object of datasets")
    if name is None:
        if len(info) != 1:
            raise ConvertError(f"{info_file}: holds {len(info)} datasets; name one with --dataset")
        (name,) = info
    if name not in info or not isinstance(info[name], dict):
        raise ConvertError(f"{info_file}: no dataset {name!r} (it has: {', '.join(sorted(info)) or 'none'})")
    entry = info[name]
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
    paths = [job.image(p) for p in image_list(value, layout.images)]
    out = conversation(turns, layout.roles, paths, layout.role_tag, layout.content_tag)
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
