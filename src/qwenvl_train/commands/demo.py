"""``qwenvl-train demo`` (``make demo``): the whole product, offline, on a small model and generated data.

    make demo                      # or: qwenvl-train demo --out runs/demo
    make demo DEMO_STEPS=small     # the shortened variant CI runs

The steps and what they write: :mod:`qwenvl_train.demo.run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..demo.run import FULL, Settings, parse_settings


def steps(text: str) -> Settings:
    """``--steps``: :func:`qwenvl_train.demo.run.parse_settings`, its errors as argparse's (exit status 2)."""
    try:
        return parse_settings(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``demo`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "demo", help="build, train, evaluate, merge and ask a small model on generated data (make demo)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )  # fmt: skip
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--steps", type=steps, default=FULL, metavar="N|small",
                        help=f"training steps (default {FULL.steps}); small: the shortened CI variant")  # fmt: skip
    parser.add_argument("--config", default=None, help="training recipe (default finetune/demo.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model, the data and training")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo; a failed step (:class:`qwenvl_train.demo.run.DemoError`) ends it with one line."""
    from ..demo.run import Demo, default_config

    config = Path(args.config) if args.config else default_config()
    if not (config.is_file() and config.with_name("demo-lora.yaml").is_file()):
        print(f"error: training recipe {config} (or demo-lora.yaml beside it) not found", file=sys.stderr)
        return 2
    Demo(Path(args.out).resolve(), args.steps, config, args.seed).run()
    return 0
