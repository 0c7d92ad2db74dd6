"""The ``qwenvl-train`` command line.

    qwenvl-train vocab [--dest DIR]            fetch and verify the genuine qwen.tiktoken
    qwenvl-train make-tiny DIR [--seed N] [--preset demo] write a tiny random Qwen-VL checkpoint (original format)
    qwenvl-train demo-data OUT [--n N] [--seed S]  write the demo's generated grounding dataset
    qwenvl-train demo [--out DIR] [--steps N|small]  the whole product on a small model (make demo)
    qwenvl-train convert --from FORMAT SRC... --out F.jsonl  bring LLaVA, ShareGPT, swift, COCO... data in
    qwenvl-train check-data DATA... --model DIR [--report DIR]  read data as training does; lengths, errors, pictures
    qwenvl-train train [--config FILE.yaml] [options]  fine-tune (full, LoRA, Q-LoRA); see `train --help`
    qwenvl-train merge --adapter DIR --output DIR [--base DIR]  merge an adapter into its base (original layout)
    qwenvl-train chat --model DIR [--adapter DIR] [--image PATH]... [QUESTION]  ask, or chat interactively
    qwenvl-train eval --model DIR --data FILE [--out F.json] [--report DIR]  score answers (IoU, exact match)
    qwenvl-train serve --model DIR [--adapter DIR] [--port N]  OpenAI-compatible API and chat page

Each sub-command is one module of :mod:`.commands` (its parser and its ``run``), listed once in :data:`COMMANDS`;
this file only wires them together, importing nothing heavy: ``--help`` answers at once, and torch/transformers
load only in the command that needs them.

``--verbose`` (or ``QWENVL_TRAIN_VERBOSE=1``) shows the messages third-party libraries print when they load.
:func:`main` is the one error wrapper: an error the product knows (a :class:`~.errors.UserError`) or a file that is
not there ends the command with one line and exit status 1 (``QWENVL_TRAIN_DEBUG=1`` adds the traceback); the
commands never catch to print.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import run_reporting
from .quiet import silence_third_party

#: The sub-commands, in the order ``--help`` lists them: each a module of :mod:`.commands` with
#: ``add_parser(subparsers)`` (which sets ``func``) and ``run(args)``.
COMMANDS = (
    "vocab",
    "make_tiny",
    "demo_data",
    "demo",
    "check_data",
    "convert",
    "chat",
    "eval",
    "serve",
    "merge",
    "train",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="qwenvl-train", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show what third-party libraries print when they load (also QWENVL_TRAIN_VERBOSE=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.commands.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qwenvl-train`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    argv = [arg for arg in argv if arg != "--verbose"]
    silence_third_party(verbose=True if verbose else None)
    if argv[:1] == ["train"]:  # `train` parses its own options (HfArgumentParser) and reports its own errors
        from .commands.train import main as train_main

        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    return run_reporting(args.func, args, known=(FileNotFoundError,))


if __name__ == "__main__":
    raise SystemExit(main())
