"""A checkpoint laid out exactly like Qwen-VL-Chat-Int4, written without any quantization library.

The spec's GPTQ section: 4 bits, symmetric, no act-order, group size 128 (halved here until it divides a layer's
input width), only ``attn.c_attn``, ``attn.c_proj``, ``mlp.w1``, ``mlp.w2``, ``mlp.c_proj`` of each block stored as
``qweight``/``qzeros``/``scales``/``g_idx`` (``c_attn`` keeps its bias) in auto-gptq's (v1) packing, everything else
fp16; ``config.json`` with the ``quantization_config`` and ``quantize_config.json`` beside it, as auto-gptq wrote
them. The 4-bit values are plain round-to-nearest (GPTQ's error feedback changes which values, not the format), so
the weights a loader must reconstruct are known exactly: :func:`dequantize_v1`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

QUANTIZED_LAYERS = ("attn.c_attn", "attn.c_proj", "mlp.w1", "mlp.w2", "mlp.c_proj")
#: 4-bit values per int32, lowest nibble first.
SHIFTS = torch.arange(0, 32, 4, dtype=torch.int64)


def int4_quantize_config(group_size: int) -> dict:
    """``quantize_config.json`` of Qwen-VL-Chat-Int4 (config.json's ``quantization_config`` adds ``quant_method``)."""
    return {"bits": 4, "group_size": group_size, "damp_percent": 0.01, "desc_act": False, "static_groups": False,
            "sym": True, "true_sequential": True, "model_name_or_path": None, "model_file_base_name": "model"}  # fmt: skip


def group_size_for(width: int) -> int:
    """128, halved until it divides ``width``."""
    size = 128
    while width % size:
        size //= 2
    return size


def pack_int32(values: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit values [..., 8k] along the last dimension into int32 [..., k], lowest nibble first."""
    grouped = values.to(torch.int64).reshape(*values.shape[:-1], -1, 8)
    packed = (grouped << SHIFTS).sum(-1)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def quantize_v1(weight: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """A linear's [out, in] weight as auto-gptq v1 tensors: symmetric 4-bit, zero point 8 stored as 7."""
    n_out, n_in = weight.shape
    groups = weight.float().reshape(n_out, n_in // group_size, group_size)
    scales = (groups.abs().amax(-1) * 2 / 15).clamp(min=1e-8).half()  # [out, groups], as GPTQ's sym range
    q = (torch.round(groups / scales.float()[..., None]) + 8).clamp(0, 15).reshape(n_out, n_in)
    return {
        "qweight": pack_int32(q).T.contiguous(),  # [in / 8, out]: 8 consecutive inputs per int32
        "qzeros": pack_int32(torch.full((n_in // group_size, n_out), 7)),
        "scales": scales.T.contiguous(),
        "g_idx": torch.arange(n_in, dtype=torch.int32) // group_size,
    }


def dequantize_v1(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor):  # noqa: ANN201
    """[out, in] weights from auto-gptq (v1) 4-bit packing: 8 values per int32, lowest nibble first, zero points
    stored minus one."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    q = ((qweight[:, None, :] >> shifts[None, :, None]) & 0xF).reshape(-1, qweight.shape[1])
    zeros = ((qzeros[:, :, None] >> shifts) & 0xF).reshape(qzeros.shape[0], -1) + 1
    return (scales[g_idx].float() * (q - zeros[g_idx]).float()).T


def write_int4_checkpoint(source: Path, out: Path) -> Path:
    """``source`` (an fp32/bf16 checkpoint in the original layout) written to ``out`` as Qwen-VL-Chat-Int4 is."""
    out.mkdir(parents=True)
    state = load_file(str(source / "model.safetensors"))
    written: dict[str, torch.Tensor] = {}
    sizes = set()
    for name, tensor in state.items():
        layer = name.removesuffix(".weight")
        if (
            name.endswith(".weight")
            and layer.startswith("transformer.h.")
            and layer.endswith(QUANTIZED_LAYERS)
        ):
            size = group_size_for(tensor.shape[1])
            sizes.add(size)
            written.update({f"{layer}.{part}": t for part, t in quantize_v1(tensor, size).items()})
        else:
            written[name] = tensor.half()
    assert len(sizes) == 1, f"one group size for every layer, got {sizes}"
    save_file(written, str(out / "model.safetensors"), metadata={"format": "pt"})
    quantize_config = int4_quantize_config(sizes.pop())
    config = json.loads((source / "config.json").read_text())
    config.update(torch_dtype="float16", quantization_config={**quantize_config, "quant_method": "gptq"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "quantize_config.json").write_text(json.dumps(quantize_config, indent=2))
    for name in ("generation_config.json", "qwen.tiktoken", "tokenizer_config.json"):
        shutil.copyfile(source / name, out / name)
    return out
