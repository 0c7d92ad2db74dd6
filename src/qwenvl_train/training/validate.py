"""Every check of ``qwenvl-train train`` that needs only the options, made while they are parsed
(:func:`.arguments.parse_args`): a bad combination fails in milliseconds, before the pre-flight checks, the data
scan or the model load.

Two steps, because transformers' ``TrainingArguments`` sets up the devices (and, under torchrun, the process
group) as it is built:

- :func:`check_device_options`: options that need a CUDA GPU, on a machine without one, read from the command line
  and the ``--config`` file before any argument class is built (also what a launcher runs once before torchrun:
  ``train --check_devices_only``);
- :func:`validate`: the rest, on the parsed arguments: ``--packing_tokens``, ``--vision_lr``, ``--quant`` against
  ``--tune``, ``--image_size``, the freeze flags against ``--tune``, parameter LoRA targets and ``--vision_cache``
  against ZeRO-3 and FSDP.

What needs more than the options is checked where that is known: the base checkpoint's files and the file
system in :mod:`.preflight` (layout, chat or base, ``--quant`` against its weights, output folder, disk space),
the model in :mod:`.prepare` and :mod:`.vision_cache` (LoRA targets, a frozen vision tower for
``--vision_cache``), the device when the loss backend is probed, the data in the scan. The value checks of single
options stay with their definitions (the argument classes' ``__post_init__``, :mod:`qwenvl_train.data.options`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..data.options import string_to_bool
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .arguments import Arguments

#: Side of a ViT patch in pixels (every released checkpoint), and the smallest --image_size (a 4 x 4 patch grid).
PATCH_SIZE = 14
MIN_IMAGE_SIZE = 4 * PATCH_SIZE
#: The flags that choose what trains in ``--tune full`` (with adapters, ``--lora_target`` and ``--modules_to_save``
#: do), in the order they are named.
FREEZE_FLAGS = ("freeze_vit", "freeze_resampler", "freeze_llm")


class UsageError(ConfigurationError):
    """An option the command line should not have accepted: reported as argparse reports its own errors (the
    command, ``error:``, the pointer to ``--help``; exit status 2)."""


def validate(args: Arguments) -> None:
    """Every check on the parsed options (see the module docstring), in the order they are listed there.

    Raises:
        UsageError: a value the command line refuses (``--packing_tokens``, ``--vision_lr``, ``--quant``).
        ConfigurationError: options that cannot go together (freeze flags, ``--vision_cache``).
    """
    training, model = args.training, args.model
    if training.packing_tokens is not None and training.packing_tokens < 1:
        raise UsageError(f"--packing_tokens must be positive, got {training.packing_tokens}")
    if training.vision_lr is not None and not training.vision_lr >= 0:
        raise UsageError(f"--vision_lr must be 0 or more, got {training.vision_lr}")
    if model.tune != "qlora" and args.quant.quant != "auto":
        raise UsageError(f"--quant {args.quant.quant} needs --tune qlora")
    if model.image_size is not None:
        check_image_size(model.image_size)
    check_freeze_flags(args)
    check_sharded_vision_targets(args)
    if model.vision_cache and (training.fsdp or _zero3(training)):
        raise ConfigurationError(
            "--vision_cache cannot be used with ZeRO-3 or FSDP: the sharded tower must run on every rank at "
            "every step; use DDP or ZeRO-2"
        )


def check_image_size(size: int) -> None:
    """``--image_size`` must cut into whole patches (14 px) and leave the resampler at least a 4 x 4 grid.

    Raises:
        UsageError: naming the nearest sizes that would do.
    """
    if size % PATCH_SIZE or size < MIN_IMAGE_SIZE:
        lower = max(MIN_IMAGE_SIZE, size // PATCH_SIZE * PATCH_SIZE)
        upper = max(MIN_IMAGE_SIZE, -(-size // PATCH_SIZE) * PATCH_SIZE)
        near = f"{lower}" if lower == upper else f"{lower} or {upper}"
        raise UsageError(
            f"--image_size must be a multiple of the patch size {PATCH_SIZE} and at least {MIN_IMAGE_SIZE}, "
            f"got {size} (try {near})"
        )


def check_sharded_vision_targets(args: Arguments) -> None:
    """A parameter LoRA (the resampler's fused ``in_proj_weight``, which ``--lora_target resampler`` includes) is
    refused under ZeRO-3 and FSDP: peft applies it through torch's parametrization of the weight, which the
    sharding wrappers replace with their own flat or partitioned parameters.

    Raises:
        ConfigurationError: one line naming the target and what to use instead.
    """
    training = args.training
    if args.model.tune == "full" or not (training.fsdp or _zero3(training)):
        return
    for target in args.lora.lora_target:
        if target == "resampler" or target.endswith("_weight"):
            raise ConfigurationError(
                f"--lora_target {target}: a parameter LoRA (the resampler's fused attn_pool.attn.in_proj_weight) "
                "cannot be sharded by ZeRO-3 or FSDP, which replace the parameter peft wraps; use DDP or ZeRO-2, "
                "or name attn_pool.attn.out_proj attn_pool.kv_proj instead"
            )


def check_freeze_flags(args: Arguments) -> None:
    """The freeze flags choose what trains in ``--tune full`` only, and must leave something to train.

    Raises:
        ConfigurationError: a freeze flag changed from its default with adapters, or all three set.
    """
    model = args.model
    if model.tune == "full":
        if all(getattr(model, flag) for flag in FREEZE_FLAGS):
            raise ConfigurationError(
                "--freeze_vit, --freeze_resampler and --freeze_llm together leave nothing to train"
            )
        return
    defaults = type(model)()
    changed = [flag for flag in FREEZE_FLAGS if getattr(model, flag) != getattr(defaults, flag)]
    if changed:
        raise ConfigurationError(
            f"--{changed[0]} applies to --tune full; with adapters, choose what trains with --lora_target "
            "(e.g. attn_pool.attn.out_proj) and --modules_to_save (e.g. attn_pool)"
        )


def _zero3(training: Any) -> bool:
    """``--deepspeed`` names a ZeRO stage 3 configuration (read from the config the arguments hold)."""
    if not training.deepspeed:
        return False
    config = getattr(training, "hf_deepspeed_config", None)
    return bool(config is not None and config.is_zero3())


def check_device_options(argv: Sequence[str], file_values: dict[str, Any]) -> None:
    """Options that need a CUDA GPU, on a machine without one: say what to add, before anything loads.

    Args:
        argv: the command line (only ``--bf16``, ``--fp16``, ``--use_cpu`` and ``--ddp_backend`` are read).
        file_values: the ``--config`` file's values; the command line wins over them.

    Raises:
        ConfigurationError: bf16/fp16 without ``--use_cpu true`` (which says the CPU is meant), or the nccl
            backend, on a machine without CUDA.
    """
    pre = argparse.ArgumentParser(prog="qwenvl-train train", add_help=False, allow_abbrev=False)
    for flag in ("bf16", "fp16", "use_cpu"):
        pre.add_argument(f"--{flag}", type=string_to_bool, nargs="?", const=True, default=None)
    pre.add_argument("--ddp_backend", default=None)
    given, _ = pre.parse_known_args(argv)
    values = {**file_values, **{k: v for k, v in vars(given).items() if v is not None}}
    import torch

    if torch.cuda.is_available():
        return
    if values.get("ddp_backend") == "nccl":
        raise ConfigurationError(
            "--ddp_backend nccl needs CUDA GPUs and this machine has none: use --ddp_backend gloo"
        )
    for flag in ("bf16", "fp16"):
        if values.get(flag) and not values.get("use_cpu"):
            raise ConfigurationError(
                f"--{flag} needs a CUDA GPU and this machine has none: add --use_cpu true --{flag} false "
                f"(or --use_cpu true to keep {flag} mixed precision on the CPU)"
            )
