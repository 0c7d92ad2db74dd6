"""The base checkpoint a run starts from (``--model_name_or_path``): its kind and layout, read from its own files
(never from its folder name): chat or base, GPTQ or not, and how many weights it holds. Works for a folder and,
through the hub cache, for a hub id. (The checkpoints a run writes are :mod:`.run_checkpoints`.)

- Chat vs base: ``chat_format`` in ``generation_config.json`` (``chatml``: the chat model, ``raw``: the base
  model), else a ``chat_template`` in ``tokenizer_config.json`` (chat). Undecided: ``--checkpoint_kind`` is asked
  for, since the answer decides what LoRA trains.
- GPTQ: the ``quantization_config`` of ``config.json``, or auto-gptq's ``quantize_config.json``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

#: Bytes per element of the safetensors dtypes.
_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "BF16": 2,
    "F16": 2,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


def checkpoint_file(model: str, name: str) -> Path | None:
    """``name`` inside the checkpoint: the folder's file, or the hub's (cached, else downloaded when the hub can
    be reached); None when absent or unknown."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        path = folder / name
        return path if path.is_file() else None
    try:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

        cached = try_to_load_from_cache(model, name)
        if isinstance(cached, str):
            return Path(cached)
        if cached is not None or constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT):
            return None  # known to be absent, or no way to ask (without minutes of retries)
        return Path(hf_hub_download(model, name))
    except Exception:  # not on the hub, no such file, a network failure: unknown
        return None


def _reachable(endpoint: str) -> bool:
    """The hub's host name resolves (no network: the answer comes at once instead of after retries)."""
    import socket
    from urllib.parse import urlparse

    try:
        socket.getaddrinfo(urlparse(endpoint).hostname or "", 443)
    except OSError:
        return False
    return True


def read_json(model: str, name: str) -> dict[str, Any] | None:
    """The JSON object in ``name`` of the checkpoint, or None when there is no such file.

    Raises:
        CheckpointError: the file is not valid JSON.
    """
    path = checkpoint_file(model, name)
    if path is None:
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable JSON file ({exc})") from None
    return value if isinstance(value, dict) else None


def detect_kind(model: str) -> str | None:
    """``chat`` or ``base`` from the checkpoint's files, or None when they do not say."""
    chat_format = (read_json(model, "generation_config.json") or {}).get("chat_format")
    if chat_format == "chatml":
        return "chat"
    if chat_format == "raw":
        return "base"
    if (read_json(model, "tokenizer_config.json") or {}).get("chat_template"):
        return "chat"
    return None


def resolve_kind(model: str, option: str) -> str:
    """``--checkpoint_kind`` made definite: the option when given, else what the checkpoint says.

    Raises:
        CheckpointError: ``auto`` and the checkpoint does not say.
    """
    if option != "auto":
        return option
    kind = detect_kind(model)
    if kind is None:
        raise CheckpointError(
            f"{model}: cannot tell whether this is a chat or a base checkpoint (no chat_format 'chatml' or 'raw' in "
            "its generation_config.json): add --checkpoint_kind chat or --checkpoint_kind base"
        )
    return kind


def quant_method(model: str) -> str | None:
    """How the checkpoint's weights are quantized (``gptq`` for Qwen-VL-Chat-Int4), or None."""
    config = read_json(model, "config.json") or {}
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method:
        return str(method).lower()
    if read_json(model, "quantize_config.json") is not None:  # auto-gptq's own file
        return "gptq"
    return None


def check_layout(model: str) -> None:
    """A checkpoint folder has ``config.json`` and ``qwen.tiktoken``; a name that is no folder must be a hub id.

    Raises:
        CheckpointError: naming the missing file (and, for ``qwen.tiktoken``, the command that fetches it).
    """
    folder = Path(model).expanduser()
    if not folder.is_dir():
        if model.startswith((".", "/", "~")) or model.count("/") != 1:
            raise CheckpointError(
                f"--model_name_or_path {model}: no such folder (nor a hub id like Qwen/Qwen-VL-Chat)"
            )
        if checkpoint_file(model, "config.json") is None:
            raise CheckpointError(
                f"--model_name_or_path {model}: not a folder, not in the hub cache, and the hub does not have it or "
                "cannot be reached: download it first, or give the folder"
            )
        return
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json, so not a model checkpoint folder")
    if not (folder / "qwen.tiktoken").is_file():
        raise CheckpointError(
            f"{folder}: no qwen.tiktoken (the tokenizer's vocabulary); fetch it with "
            f"`qwenvl-train vocab --dest {folder}`"
        )


def weight_shapes(model: str) -> dict[str, tuple[tuple[int, ...], int]]:
    """Every tensor of the checkpoint's safetensors files: name -> (shape, bytes per element), from the file
    headers only. Empty when the checkpoint has no safetensors files here (``.bin``, or a hub id not cached)."""
    folder = Path(model).expanduser()
    shapes: dict[str, tuple[tuple[int, ...], int]] = {}
    if not folder.is_dir():
        return shapes
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name != "__metadata__":
                shapes[name] = (tuple(info["shape"]), _DTYPE_BYTES.get(info["dtype"], 4))
    return shapes
