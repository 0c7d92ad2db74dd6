"""``qwenvl-train make-tiny DIR``: write a tiny random Qwen-VL checkpoint in the original format
(:mod:`qwenvl_train.tiny`)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``make-tiny`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "make-tiny", help="write a tiny random Qwen-VL checkpoint in the original format"
    )
    parser.add_argument("dir", help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same weights)")
    parser.add_argument(
        "--preset",
        choices=("tiny", "demo"),
        default="tiny",
        help="tiny: the test model; demo: the (still small) model `make demo` trains",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the checkpoint and print its folder."""
    from ..tiny import make_tiny

    print(make_tiny(args.dir, seed=args.seed, preset=args.preset))
    return 0
