"""``qwenvl-train merge``: fold a LoRA or Q-LoRA adapter into its base and write a complete checkpoint.

    qwenvl-train merge --adapter output_qwen_lora --output qwen-vl-chat-merged
    qwenvl-train merge --adapter output_qwen_int4 --base /models/Qwen-VL-Chat --output merged-int4 \\
        --quantize gptq --calib-data data/train.json

The base is the checkpoint named in the adapter's ``adapter_config.json`` unless ``--base`` is given. A LoRA or
NF4 Q-LoRA adapter is merged by peft into the base loaded unquantized (never re-quantized on the way); modules a
base-checkpoint adapter trained in full (``wte``/``lm_head``) replace the base's. An adapter trained on a GPTQ
checkpoint (Qwen-VL-Chat-Int4) is merged into the 16-bit checkpoint given with ``--base``: packed 4-bit weights
cannot hold the update. ``--quantize gptq`` then re-quantizes the result to the Int4 layout.

The output replaces an original checkpoint unchanged (see :mod:`.layout`) and is renamed into place only once
complete. Only the standard library is imported at module level, so that building the CLI stays fast (the
command line is :mod:`qwenvl_train.commands.merge`).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..model.visual_config import adapter_visual, vision_settings, with_image_size
from ..outputs import check_output_folder
from .layout import (
    DTYPE_NAMES,
    copy_model_files,
    read_json,
    staging_folder,
    write_chat_template,
    write_config,
    write_weights,
)

DEFAULT_MAX_SHARD_SIZE = "2GB"
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


class MergeError(UserError, RuntimeError):
    """The merge cannot be done as asked; the message is one line that says why and what to do."""


def parse_size(text: str) -> int:
    """``"2GB"`` -> 2_000_000_000 (decimal units B, KB, MB, GB, TB, as transformers' ``max_shard_size``)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?B)?\s*", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size such as 2GB, 500MB or 1000000")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2) or ""])


def resolve_base(adapter: Path, base: str | Path | None = None) -> Path:
    """The folder of the checkpoint to merge into: ``base``, or ``base_model_name_or_path`` of the adapter.

    Raises:
        MergeError: no adapter there, the base cannot be found, or the base is quantized (Int4).
    """
    adapter_config = read_json(adapter / "adapter_config.json")
    if not adapter_config:
        raise MergeError(
            f"{adapter}: no adapter_config.json, so not a LoRA adapter folder "
            "(the output of a --tune full run is already a complete model)"
        )
    if base is None:
        named = adapter_config.get("base_model_name_or_path")
        path = Path(named or "")
        if not named or not (path / "config.json").is_file():
            raise MergeError(
                f"base model {named!r} (base_model_name_or_path in {adapter / 'adapter_config.json'}) not found: "
                "pass --base DIR, the folder of the checkpoint the adapter was trained on"
            )
    else:
        path = Path(base)
        if not (path / "config.json").is_file():
            raise MergeError(f"--base {base}: no config.json in that folder")
    method = (read_json(path / "config.json").get("quantization_config") or {}).get("quant_method")
    if method:
        raise MergeError(
            f"{path} holds {method} 4-bit weights (like Qwen-VL-Chat-Int4), which cannot hold the adapter's update: "
            "pass --base DIR with the 16-bit checkpoint it was quantized from (e.g. Qwen-VL-Chat for "
            "Qwen-VL-Chat-Int4), and add --quantize gptq --calib-data FILE for an Int4 result"
        )
    return path


def default_dtype(base_config: dict[str, Any], quantize: str | None) -> str:
    """fp16 for a GPTQ export (as Qwen-VL-Chat-Int4), otherwise the dtype the base is stored in (bf16 if unsaid)."""
    if quantize:
        return "fp16"
    stored = base_config.get("torch_dtype") or base_config.get("dtype")
    return {name: short for short, name in DTYPE_NAMES.items()}.get(stored, "bf16")


def merge(
    adapter: str | Path,
    output: str | Path,
    base: str | Path | None = None,
    dtype: str | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    quantize: str | None = None,
    calib_data: Sequence[str | Path] | None = None,
) -> Path:
    """Merge ``adapter`` into its base and write the checkpoint to ``output``.

    Args:
        adapter: the adapter folder a ``--tune lora``/``qlora`` run wrote.
        output: the folder to create (it must not exist).
        base: the checkpoint to merge into (default: the adapter's ``base_model_name_or_path``).
        dtype: ``bf16``, ``fp16`` or ``fp32`` (default: see :func:`default_dtype`).
        max_shard_size: largest safetensors shard, in bytes or as ``"2GB"``.
        quantize: ``"gptq"`` to re-quantize the merged model to 4-bit (the Qwen-VL-Chat-Int4 layout).
        calib_data: conversation files to calibrate the quantization on (needed with ``quantize``).

    Returns:
        ``output``.

    Raises:
        MergeError: a known problem, with a one-line message.
    """
    adapter, output = Path(adapter), Path(output)
    base_dir = resolve_base(adapter, base)
    check_request(base_dir, adapter, output, quantize, calib_data, dtype)
    base_config = trained_config(read_json(base_dir / "config.json"), adapter)
    dtype = dtype or default_dtype(base_config, quantize)
    print(f"merge: adapter {adapter} into {base_dir} ({DTYPE_NAMES[dtype]})", flush=True)

    from ..disk_full import saving  # a full disk: one line, not a traceback

    untouched = lambda: f"{adapter} and {base_dir} are untouched: free some space and merge again"  # noqa: E731
    with saving(output, "the merged model", None, untouched), staging_folder(output) as folder:
        copy_model_files(base_dir, adapter, folder)
        write_chat_template(folder, base_config)
        model = merged_model(base_dir, adapter, dtype, vision_settings(base_config).image_size)
        quantization = None
        if quantize == "gptq":
            from transformers import AutoTokenizer

            from .quantize import quantize_gptq

            quantization = quantize_gptq(model, AutoTokenizer.from_pretrained(folder), calib_data or ())
        write_config(base_config, folder, dtype, quantization)
        write_weights(model.state_dict(), folder, max_shard_size)
    print(f"merge: done: {output}", flush=True)
    return output


def check_request(
    base_dir: Path,
    adapter: Path,
    output: Path,
    quantize: str | None,
    calib_data: Sequence[str | Path] | None,
    dtype: str | None,
) -> None:
    """Everything that can be checked before loading a model.

    Raises:
        MergeError: the output exists, no vocabulary, an unknown dtype, or a quantization without its calibration
            data or in a dtype other than fp16.
    """
    check_output_folder(output, "--output")  # a file, a device, a dangling symlink: one line naming it
    if os.path.lexists(output):
        raise MergeError(
            f"{output} already exists: choose a new --output (a merge never writes over a folder)"
        )
    if not any((folder / "qwen.tiktoken").is_file() for folder in (base_dir, adapter)):
        raise MergeError(
            f"neither {base_dir} nor {adapter} holds qwen.tiktoken: run `qwenvl-train vocab --dest {base_dir}`"
        )
    if quantize not in (None, "gptq"):
        raise MergeError(f"--quantize {quantize}: only gptq is supported")
    if dtype not in (None, *DTYPE_NAMES):
        raise MergeError(f"--dtype {dtype}: choose from {', '.join(DTYPE_NAMES)}")
    if quantize and dtype not in (None, "fp16"):
        raise MergeError(f"--quantize gptq writes fp16, as Qwen-VL-Chat-Int4 does: drop --dtype {dtype}")
    if quantize and not calib_data:
        raise MergeError(
            "--quantize gptq needs --calib-data FILE: conversations in the training format (your training data, "
            "for instance) to calibrate the 4-bit weights on"
        )
    for path in calib_data or ():
        if not Path(path).is_file():
            raise MergeError(f"--calib-data {path}: no such file")


def trained_config(base_config: dict[str, Any], adapter: Path) -> dict[str, Any]:
    """The base's ``config.json`` with the picture size the adapter was trained at (its ``visual_config.json``,
    ``train --image_size``) when that differs, so the merged folder, in this project and in the original code,
    resizes pictures as training did; otherwise the base's own, unchanged."""
    size = adapter_visual(adapter).get("image_size")
    if size is None or size == vision_settings(base_config).image_size:
        return base_config
    return {**base_config, "visual": {**(base_config.get("visual") or {}), "image_size": int(size)}}


def merged_model(base_dir: Path, adapter: Path, dtype: str, image_size: int | None = None) -> Any:
    """The base loaded unquantized in ``dtype`` (at ``image_size`` when given) with the adapter merged in by peft (a
    plain ``QwenVLForCausalLM``); the resampler's parameter LoRA folds into ``in_proj_weight`` under its own name."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    if image_size is not None:
        kwargs["config"] = with_image_size(AutoConfig.from_pretrained(base_dir), image_size)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, DTYPE_NAMES[dtype]), **kwargs)
    try:
        model = PeftModel.from_pretrained(model, adapter)
    except RuntimeError as exc:  # shapes that do not match: an adapter trained on another model
        lines = [line.strip() for line in str(exc).strip().splitlines()]
        detail = next((line for line in lines if line.startswith("size mismatch")), lines[0])
        raise MergeError(f"{adapter} does not fit {base_dir}: {detail}") from None
    return merge_nested(model.merge_and_unload())


def merge_nested(model: Any) -> Any:
    """Fold in and unwrap the LoRA layers ``merge_and_unload`` leaves behind: peft wraps the resampler's attention
    (``attn_pool.attn``, for its ``in_proj_weight`` parameter LoRA) around its already adapted ``out_proj``, and
    unloading the outer wrapper puts the inner one back unmerged (``out_proj.base_layer``,
    ``out_proj.lora_A``...), which would change the original key names."""
    from peft.tuners.lora import LoraLayer

    nested = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, module in nested:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    return model
