"""``qwenvl-train vocab [--dest DIR]``: fetch and verify the genuine ``qwen.tiktoken`` (:mod:`qwenvl_train.vocab`)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``vocab`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "vocab", help="fetch the genuine qwen.tiktoken from the dashscope wheel (sha256-checked)"
    )
    parser.add_argument("--dest", default=None, help="also copy it into this folder (e.g. a model directory)")
    parser.add_argument("--package", default="dashscope", help="pip requirement to take it from")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the path of the verified vocabulary."""
    from ..vocab import ensure_vocab

    print(ensure_vocab(dest=args.dest, package=args.package))
    return 0
