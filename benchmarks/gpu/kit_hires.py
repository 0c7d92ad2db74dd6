"""Step ``hires``: LoRA training steps of the big model at higher resolutions (issue #28), the cost a user of
``train --image_size N --lora_target ...`` pays: one row per (targets, N) of ``plan.hires_targets`` x
``plan.hires_sizes`` (448, 672 and 896 px in a real run), batch 1 x grad-accum ``plan.accum``,
``plan.hires_length`` tokens and one picture of N x N per sample.

The model is prepared as ``train`` prepares it: ``--lora_target`` part names expanded and split into module and
parameter adapters by the product's own ``training.prepare.add_lora`` (the resampler's fused ``in_proj_weight``
as a parameter LoRA), bf16, sdpa, the labelled loss, activation checkpointing on. The tower runs in every forward:
there is no vision cache to warm when the pictures change size and, with ``vit`` in the targets, the tower trains.
The ViT sees (N/14)^2 patches; the language model still sees 256 image tokens per picture, so the sequence length
is the same in every row. Columns as in the training steps; the FLOPs count the tower's forward at N (and its
backward when the ViT has adapters).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from kit_common import Part, Plan, elapsed, free_cuda, model_dir, train_step
from kit_train import measure, set_checkpointing


def tower_loss(model, sample: dict, n_items: int) -> torch.Tensor:  # noqa: ANN001
    """The training loss with the pictures through the tower in the forward (the vision cache off)."""
    return model(
        input_ids=sample["input_ids"],
        pixel_values=sample["pixel_values"],
        labels=sample["labels"],
        num_items_in_batch=n_items,
        use_cache=False,
    ).loss


def at_size(config: train_step.QwenVLConfig, size: int) -> train_step.QwenVLConfig:
    """A copy of ``config`` with ``visual.image_size`` = ``size`` (what ``--image_size`` records)."""
    from qwenvl_train.model.visual_config import with_image_size

    return with_image_size(copy.deepcopy(config), size)


def run(part: Part, work: Path, plan: Plan) -> None:
    from qwenvl_train.training.arguments import LoraArguments
    from qwenvl_train.training.prepare import add_lora

    dev = train_step.device()
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    folder = model_dir(work, "big")
    config = train_step.QwenVLConfig.from_pretrained(folder)
    peak = train_step.matmul_peak(dev, rounds=plan.peak_rounds, seconds=plan.peak_seconds)
    part["matmul_peak_tflops"] = round(peak / 1e12, 3)
    part["model"] = {
        "size": plan.big,
        "accum": plan.accum,
        "iters": plan.iters,
        "warmup": plan.warmup,
        "length": plan.hires_length,
        "checkpoint_image_size": config.image_size,
    }
    for targets in plan.hires_targets:
        start = time.perf_counter()
        model = train_step.QwenVLForCausalLM.from_pretrained(
            folder, dtype=dtype, attn_implementation="sdpa", device_map={"": str(dev)}
        )
        model = add_lora(model, LoraArguments(lora_target=list(targets)), chat=True).train()
        base = model.get_base_model()
        set_checkpointing(base, True)
        name = " ".join(targets)
        part["model"] = part["model"] | {
            f"load_seconds {name}": elapsed(start),
            f"trainable {name}": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
        for size in plan.hires_sizes:
            extra = {"targets": name, "image_size": size, "patches": (size // 14) ** 2, "attn": "sdpa",
                     "loss": base.loss_backend}  # fmt: skip
            try:
                measure(part, model, "lora-hires", "tower", plan.hires_length, True, tower_loss,
                        at_size(config, size), plan, peak, extra, vit_trains="vit" in targets)  # fmt: skip
            except torch.OutOfMemoryError:
                free_cuda()
                part.row(mode="lora-hires", path="tower", length=plan.hires_length, checkpointing=True,
                         error="out of memory", **extra, **{"pass": False})  # fmt: skip
        del model, base
        free_cuda()
