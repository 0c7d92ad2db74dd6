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

Each sub-command lives in the module of its concern; this file only wires them together, importing nothing
heavy: ``--help`` answers at once, and torch/transformers load only in the command that needs them.

``--verbose`` (or ``QWENVL_TRAIN_VERBOSE=1``) shows the messages third-party libraries print when they load;
an error the product knows ends the command with one line and exit status 1 (``QWENVL_TRAIN_DEBUG=1`` adds the
traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import run_reporting
from .quiet import silence_third_party


def _cmd_vocab(args: argparse.Namespace) -> int:
    from .vocab import ensure_vocab

    print(ensure_vocab(dest=args.dest, package=args.package))
    return 0


def _cmd_make_tiny(args: argparse.Namespace) -> int:
    from .tiny import make_tiny

    print(make_tiny(args.dir, seed=args.seed, preset=args.preset))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="qwenvl-train", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show what third-party libraries print when they load (also QWENVL_TRAIN_VERBOSE=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "vocab", help="fetch the genuine qwen.tiktoken from the dashscope wheel (sha256-checked)"
    )
    p.add_argument("--dest", default=None, help="also copy it into this folder (e.g. a model directory)")
    p.add_argument("--package", default="dashscope", help="pip requirement to take it from")
    p.set_defaults(func=_cmd_vocab)

    p = sub.add_parser("make-tiny", help="write a tiny random Qwen-VL checkpoint in the original format")
    p.add_argument("dir", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same weights)")
    p.add_argument(
        "--preset",
        choices=("tiny", "demo"),
        default="tiny",
        help="tiny: the test model; demo: the (still small) model `make demo` trains",
    )
    p.set_defaults(func=_cmd_make_tiny)

    from .demo.data import add_parser as add_demo_data

    add_demo_data(sub)
    from .demo.run import add_parser as add_demo

    add_demo(sub)
    from .reports.check_data import add_parser as add_check_data  # the data layer's check-data, with --report

    add_check_data(sub)
    from .data.convert.command import add_parser as add_convert

    add_convert(sub)
    from .inference import chat_cli, eval_cli

    chat_cli.add_parser(sub)
    eval_cli.add_parser(sub)
    from .serve.command import add_parser as add_serve

    add_serve(sub)

    from .export.merging import add_parser as add_merge

    add_merge(sub)

    # `train` owns its (HfArgumentParser) options; main() hands it the rest of the command line.
    sub.add_parser(
        "train", help="fine-tune a Qwen-VL checkpoint (options: qwenvl-train train --help)", add_help=False
    )

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qwenvl-train`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    argv = [arg for arg in argv if arg != "--verbose"]
    silence_third_party(verbose=True if verbose else None)
    if argv[:1] == ["train"]:
        if "-h" in argv or "--help" in argv:
            from .training.help import print_train_help

            return print_train_help()
        from .training.run import main as train_main

        return int(train_main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return run_reporting(args.func, args)


if __name__ == "__main__":
    raise SystemExit(main())
