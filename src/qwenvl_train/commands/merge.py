"""``qwenvl-train merge``: fold a LoRA or Q-LoRA adapter into its base and write a complete checkpoint.

    qwenvl-train merge --adapter output_qwen_lora --output qwen-vl-chat-merged
    qwenvl-train merge --adapter output_qwen_int4 --base /models/Qwen-VL-Chat --output merged-int4 \\
        --quantize gptq --calib-data data/train.json

What it does and why: :mod:`qwenvl_train.export.merging`.
"""

from __future__ import annotations

import argparse

from ..export.layout import DTYPE_NAMES
from ..export.merging import DEFAULT_MAX_SHARD_SIZE, merge, parse_size


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``merge`` on a CLI's subparsers; the handler is :func:`run`."""
    parser = subparsers.add_parser(
        "merge",
        help="merge a LoRA/Q-LoRA adapter into its base: a checkpoint in the original layout",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--adapter", required=True, metavar="DIR", help="adapter folder (adapter_config.json)"
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to create")
    parser.add_argument(
        "--base",
        metavar="DIR",
        help="checkpoint to merge into (default: the adapter's base_model_name_or_path; for an adapter trained "
        "on Qwen-VL-Chat-Int4, the 16-bit Qwen-VL-Chat)",
    )
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPE_NAMES),
        help="dtype to write (default: the base's torch_dtype; fp16 with --quantize gptq)",
    )
    parser.add_argument(
        "--max-shard-size",
        type=parse_size,
        default=DEFAULT_MAX_SHARD_SIZE,
        metavar="SIZE",
        help=f"largest safetensors shard (default {DEFAULT_MAX_SHARD_SIZE})",
    )
    parser.add_argument(
        "--quantize", choices=["gptq"], help="re-quantize to 4-bit GPTQ (the Qwen-VL-Chat-Int4 layout)"
    )
    parser.add_argument(
        "--calib-data", nargs="+", metavar="FILE", help="conversations to calibrate --quantize gptq on"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Handler for parsed ``merge`` arguments; a :class:`MergeError` ends it with one line (``cli.main``)."""
    merge(
        args.adapter, args.output, args.base, args.dtype, args.max_shard_size, args.quantize, args.calib_data
    )
    return 0
