"""Re-quantizing a merged model to 4-bit GPTQ in the layout of Qwen-VL-Chat-Int4.

Only the linear layers of the decoder blocks (``attn.c_attn``, ``attn.c_proj``, ``mlp.w1``, ``mlp.w2``,
``mlp.c_proj``) become ``qweight``/``qzeros``/``scales``/``g_idx`` (``c_attn`` keeps its bias); the vision tower,
``wte``, the norms and ``lm_head`` stay 16-bit. 4 bits, symmetric, no act-order, group size 128 (halved until it
divides every layer's input width, for tiny test models), damp 0.01, packed in the auto-gptq (v1) format that the
released Int4 checkpoint uses. The calibration conversations are read and rendered by the training data pipeline,
images included, so the 4-bit weights are fitted to what the model sees when it is used.

The quantization itself is gptqmodel's, driven through optimum as transformers does for ``GPTQConfig``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

BITS = 4
GROUP_SIZE = 128
DAMP_PERCENT = 0.01
#: At most this many calibration conversations are used (the GPTQ paper's 128 segments).
CALIB_SAMPLES = 128
#: The linear layers quantized in each decoder block ``transformer.h.N``.
QUANTIZED_LAYERS = ("attn.c_attn", "attn.c_proj", "mlp.w1", "mlp.w2", "mlp.c_proj")


def auto_gptq_config(group_size: int) -> dict[str, Any]:
    """``quantize_config.json`` as auto-gptq wrote it for Qwen-VL-Chat-Int4 (config.json adds ``quant_method``)."""
    return {
        "bits": BITS,
        "group_size": group_size,
        "damp_percent": DAMP_PERCENT,
        "desc_act": False,
        "static_groups": False,
        "sym": True,
        "true_sequential": True,
        "model_name_or_path": None,
        "model_file_base_name": "model",
    }


def group_size_for(model: nn.Module) -> int:
    """128, halved until it divides the input width of every layer to quantize."""
    widths = {m.in_features for m in model.transformer.h.modules() if isinstance(m, nn.Linear)}
    size = GROUP_SIZE
    while any(width % size for width in widths):
        size //= 2
    return size


def calibration_samples(
    model: nn.Module, tokenizer: Any, paths: Sequence[str | Path]
) -> list[dict[str, torch.Tensor]]:
    """The first :data:`CALIB_SAMPLES` conversations of ``paths``, rendered as for training (ChatML, image spans,
    images loaded and resized), as ``input_ids``/``attention_mask`` [1, L] plus ``pixel_values`` when they have
    images. Conversations longer than ``seq_length`` are cut at a turn boundary."""
    from ..data import ConversationDataset

    dataset = ConversationDataset.from_model(
        paths, tokenizer, model.config, model_max_length=model.config.seq_length, truncation="cut_turns"
    )
    samples = []
    for index in range(min(len(dataset), CALIB_SAMPLES)):
        item = dataset[index]
        ids = item["input_ids"][None]
        sample = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if item["pixel_values"] is not None:
            sample["pixel_values"] = item["pixel_values"]
        samples.append(sample)
    print(f"merge: calibrating GPTQ on {len(samples)} of {len(dataset)} conversations", flush=True)
    return samples


@contextmanager
def images_for_calibration(model: nn.Module, samples: list[dict[str, torch.Tensor]]) -> Iterator[None]:
    """While active, a forward of ``model`` on a calibration sample's ids gets that sample's images.

    optimum passes only ``input_ids`` and ``attention_mask`` to the model; the images are found again by the ids.
    """
    pending: dict[bytes, list[torch.Tensor]] = {}
    for sample in samples:
        if "pixel_values" in sample:
            pending.setdefault(sample["input_ids"].numpy().tobytes(), []).append(sample["pixel_values"])

    def add_images(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        images = pending.get(kwargs["input_ids"].cpu().numpy().tobytes())
        if images:
            kwargs["pixel_values"] = images.pop(0).to(kwargs["input_ids"].device, model.dtype)
        return args, kwargs

    handle = model.register_forward_pre_hook(add_images, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def quantize_gptq(model: nn.Module, tokenizer: Any, calib_data: Sequence[str | Path]) -> dict[str, Any]:
    """Quantize ``model``'s decoder blocks in place to 4-bit GPTQ, packed in the v1 (auto-gptq) format.

    Args:
        model: the merged ``QwenVLForCausalLM`` (16- or 32-bit).
        tokenizer: its tokenizer, for rendering the calibration conversations.
        calib_data: data files in the training format.

    Returns:
        The auto-gptq quantize config to write beside the weights.
    """
    from gptqmodel.utils.model import hf_convert_gptq_v2_to_v1_format
    from optimum.gptq import GPTQQuantizer

    samples = calibration_samples(model, tokenizer, calib_data)
    if torch.cuda.is_available():  # the calibration forwards, vision tower included, are too slow on a CPU
        model.cuda()
    group_size = group_size_for(model)
    quantizer = GPTQQuantizer(
        bits=BITS,
        group_size=group_size,
        damp_percent=DAMP_PERCENT,
        desc_act=False,
        sym=True,
        true_sequential=True,
        dataset=[{"input_ids": s["input_ids"], "attention_mask": s["attention_mask"]} for s in samples],
        block_name_to_quantize="transformer.h",
        modules_in_block_to_quantize=[[name] for name in QUANTIZED_LAYERS],
        model_seqlen=model.config.seq_length,
    )
    with images_for_calibration(model, samples):
        quantizer.quantize_model(model, tokenizer)
    # gptqmodel packs in its v2 format (zero points not offset); the released Int4 files use v1, as auto-gptq did.
    hf_convert_gptq_v2_to_v1_format(model, True, BITS, quantizer.quant_linear, "gptq_v2", None)
    return auto_gptq_config(group_size)
