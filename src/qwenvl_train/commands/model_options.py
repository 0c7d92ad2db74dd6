"""Options shared by ``qwenvl-train chat``, ``eval`` and ``serve`` (standard library only: the CLI stays fast)."""

from __future__ import annotations

import argparse
from typing import Any

DTYPES = ("auto", "bf16", "fp16", "fp32")  # see inference.loading.torch_dtype


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--adapter``, ``--dtype``, ``--device``."""
    parser.add_argument(
        "--model",
        metavar="DIR",
        help="model folder (config.json, weights, qwen.tiktoken), or an adapter folder as training saves it",
    )
    parser.add_argument(
        "--adapter", metavar="DIR", help="LoRA adapter folder to apply on --model (default base: its own)"
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, default="auto", help="weights dtype (auto: bf16 on a GPU, fp32 on CPU)"
    )
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )


def add_generation_arguments(parser: argparse.ArgumentParser, greedy_default: bool) -> None:
    """Overrides of generation_config.json: ``--max-new-tokens``, ``--top-p``, ``--temperature`` and
    ``--greedy`` / ``--sample``."""
    parser.add_argument(
        "--max-new-tokens", type=positive_int, metavar="N", help="default: generation_config.json (512)"
    )
    parser.add_argument(
        "--top-p", type=float, metavar="P", help="nucleus sampling (default: generation_config)"
    )
    parser.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    if greedy_default:
        parser.add_argument(
            "--sample", action="store_true", help="sample as generation_config.json says (default: greedy)"
        )
    else:
        parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")


def generation_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The generation settings given on the command line, as keyword arguments of ``model.chat``."""
    overrides: dict[str, Any] = {}
    if args.max_new_tokens is not None:
        overrides["max_new_tokens"] = args.max_new_tokens
    if args.top_p is not None:
        overrides["top_p"] = args.top_p
    if args.temperature is not None:
        overrides["temperature"] = args.temperature
    if getattr(args, "greedy", False) or not getattr(args, "sample", True):
        overrides["do_sample"] = False
    return overrides
