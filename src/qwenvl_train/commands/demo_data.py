"""``qwenvl-train demo-data OUT``: write the demo's generated grounding dataset (:mod:`qwenvl_train.demo.data`).

qwenvl-train demo-data runs/demo/data --n 2000 --seed 0
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``demo-data`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "demo-data",
        help="write the demo's generated grounding dataset (coloured shapes, boxes) to a folder",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("out", help="output folder (train.json, heldout.json, images/)")
    parser.add_argument("--n", type=int, default=2000, help="training conversations (default 2000)")
    parser.add_argument("--n-heldout", type=int, default=64, help="held-out conversations (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the files and print their paths."""
    from ..demo.data import write_demo_data  # PIL: only when the data is written

    train, heldout = write_demo_data(args.out, n=args.n, n_heldout=args.n_heldout, seed=args.seed)
    print(train)
    print(heldout)
    return 0
