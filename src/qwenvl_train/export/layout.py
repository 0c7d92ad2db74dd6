"""Writing a model folder in the layout of the original checkpoints, so that it replaces one unchanged.

The folder holds the base's own ``config.json`` (``model_type: "qwen"``, the ``visual`` dict and, when the base
had them, ``auto_map`` and the remote-code ``.py`` files), ``generation_config.json``, ``qwen.tiktoken``,
``tokenizer_config.json`` (with a ``chat_template`` that renders the training prompt) and the weights as safetensors shards (``model.safetensors``, or
``model-0000k-of-0000n.safetensors`` plus ``model.safetensors.index.json``). It is written in a hidden folder
beside the output and renamed at the end: an interrupted export never leaves a half-written model under the
output name.

Only the standard library (and :mod:`qwenvl_train.outputs`, itself standard library only) is imported here at
module level (the CLI imports this module to build its parser).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ..outputs import staged_folder

#: Files that are weights (or their index), not copied from the base: the export writes its own.
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.gguf",
                   "*.index.json", "quantize_config.json")  # fmt: skip
#: Files a loadable folder needs beside config and weights; taken from the adapter when the base lacks them.
MODEL_FILES = ("generation_config.json", "qwen.tiktoken", "tokenizer_config.json")
#: ``torch_dtype`` strings of config.json, by the names the CLI accepts.
DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (empty when the file does not exist)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """``data`` as indented JSON, as the original checkpoints store their configs."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def staging_folder(output: Path) -> AbstractContextManager[Path]:
    """A new hidden folder beside ``output``, renamed to ``output`` when the block succeeds, removed otherwise
    (:func:`qwenvl_train.outputs.staged_folder`: ``output`` must not exist, not even as a symlink or a device)."""
    return staged_folder(output, "--output")


def copy_model_files(base: Path, adapter: Path, folder: Path) -> list[str]:
    """Copy every top-level file of ``base`` except config.json and weights, then fill the missing
    :data:`MODEL_FILES` from ``adapter``. Returns the names copied."""
    copied = []
    for path in sorted(base.iterdir()):
        if path.is_file() and path.name != "config.json" and not any(path.match(p) for p in WEIGHT_PATTERNS):
            shutil.copyfile(path, folder / path.name)
            copied.append(path.name)
    for name in MODEL_FILES:
        if not (folder / name).exists() and (adapter / name).is_file():
            shutil.copyfile(adapter / name, folder / name)
            copied.append(name)
    return copied


def write_chat_template(folder: Path, base_config: Mapping[str, Any]) -> None:
    """Add the Qwen-VL ``chat_template`` to the folder's ``tokenizer_config.json`` (kept otherwise as copied), so
    tools that format prompts with ``apply_chat_template`` render the prompt training rendered."""
    from ..format.chat_template import chat_template
    from ..model.visual_config import vision_settings

    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    config = read_json(path)
    config["chat_template"] = chat_template(vision_settings(base_config).n_queries)
    write_json(path, config)


def write_config(
    base_config: Mapping[str, Any], folder: Path, dtype: str, quantization: Mapping[str, Any] | None = None
) -> None:
    """``config.json``: the base's own file (``auto_map`` and all) with ``torch_dtype`` set to what is written
    and, for a GPTQ export, the ``quantization_config``; ``quantize_config.json`` beside it as auto-gptq wrote it.

    Args:
        base_config: the base checkpoint's ``config.json`` as read from disk.
        folder: the output folder.
        dtype: ``bf16``, ``fp16`` or ``fp32``.
        quantization: the auto-gptq quantize config (None: not quantized).
    """
    config = {k: v for k, v in base_config.items() if k != "quantization_config"}
    config["torch_dtype"] = DTYPE_NAMES[dtype]
    if "dtype" in config:  # a folder saved by transformers 5 names it so
        config["dtype"] = DTYPE_NAMES[dtype]
    if quantization is not None:
        config["quantization_config"] = {**quantization, "quant_method": "gptq"}
        write_json(folder / "quantize_config.json", quantization)
    write_json(folder / "config.json", config)


def write_weights(state: Mapping[str, Any], folder: Path, max_shard_size: int | str) -> int:
    """Write ``state`` (name -> torch tensor) as safetensors shards of at most ``max_shard_size``, plus the index
    when there is more than one, printing a line per shard. Returns the number of shards."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    split = split_torch_state_dict_into_shards(
        dict(state), filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
    )
    shards = split.filename_to_tensors
    mode = (
        folder.stat().st_mode & 0o666
    )  # safetensors creates files 0600; give them the folder's (umask) access
    for k, (filename, names) in enumerate(shards.items(), start=1):
        tensors = {name: state[name].detach().cpu().contiguous() for name in names}
        save_file(tensors, str(folder / filename), metadata={"format": "pt"})
        (folder / filename).chmod(mode)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        print(f"merge: wrote shard {k}/{len(shards)} {filename} ({size / 2**30:.2f} GiB)", flush=True)
    if split.is_sharded:
        total = sum(t.numel() * t.element_size() for t in state.values())
        write_json(
            folder / "model.safetensors.index.json",
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(split.tensor_to_filename.items()))},
        )
    return len(shards)
