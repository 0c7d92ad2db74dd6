"""``qwenvl-train train [--config FILE.yaml] [options]``: fine-tune (full, LoRA, Q-LoRA).

``train`` owns its options (transformers' ``HfArgumentParser``, :mod:`qwenvl_train.training.arguments`), so the
CLI registers the name only and hands the rest of the command line to :func:`main`. Its errors end with one line
too, through :func:`qwenvl_train.errors.run_reporting` in :func:`qwenvl_train.training.run.main`, which also
leaves the process group under torchrun.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` on the CLI's subparsers (the name and its one-line help only)."""
    return subparsers.add_parser(
        "train", help="fine-tune a Qwen-VL checkpoint (options: qwenvl-train train --help)", add_help=False
    )


def main(argv: Sequence[str]) -> int:
    """Run ``train`` with its own arguments; ``--help`` answers from the cache without transformers."""
    argv = list(argv)
    if "-h" in argv or "--help" in argv:
        from ..training.help import print_train_help

        return print_train_help()
    from ..training.run import main as train_main

    return int(train_main(argv) or 0)
