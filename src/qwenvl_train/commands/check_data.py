"""``qwenvl-train check-data``: read training data the way training does and report lengths, images and errors.

    qwenvl-train check-data data/demo.json --model ./tiny-model --model_max_length 2048 --show 2 --dump ids.jsonl
    qwenvl-train check-data data/train.json --model ./tiny-model --report runs/check   # and a page with pictures

Runs the scan training runs (:func:`qwenvl_train.data.check.check_and_print`), with the same data options under
the same names (``--model_max_length``, ``--truncation``, ``--label_policy``, ``--on_error``, ...); ``--report DIR``
then writes the page of :mod:`qwenvl_train.reports.check_data`. The one difference from training:
``--verify_images`` defaults to ``full`` here. Exit status: 0 when training would start with these options, 1
when it would stop (an error under ``--on_error raise``, or no sample left), 2 when the model directory is
unusable.
"""

from __future__ import annotations

import argparse

from ..data.check import CHECK_DEFAULTS
from ..data.options import DataOptions, data_options_parser
from ..reports.check_data import DEFAULT_SAMPLES


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``check-data`` on the CLI's subparsers; the handler is :func:`run`."""
    parser = subparsers.add_parser(
        "check-data",
        help="read training data the way training does and report lengths, images and errors",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        parents=[data_options_parser(**CHECK_DEFAULTS)],
    )
    parser.add_argument("data", nargs="+", metavar="DATA", help="data files (.json / .jsonl)")
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="model directory (config.json, qwen.tiktoken)"
    )
    parser.add_argument(
        "--dump",
        default=None,
        metavar="FILE.jsonl",
        help="write ids and labels of every sample training gets (-: the standard output, the report on stderr)",
    )
    parser.add_argument(
        "--show", type=int, default=0, metavar="K", help="print K samples with trained spans in [[ ]]"
    )
    group = parser.add_argument_group("picture report")
    group.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="also write DIR/index.html: counts, errors, lengths, pictures",
    )
    group.add_argument(
        "--report-samples",
        type=non_negative,
        default=DEFAULT_SAMPLES,
        metavar="N",
        help=f"the first N and a random N samples with pictures in the report (default {DEFAULT_SAMPLES})",
    )
    group.add_argument(
        "--report-seed", type=int, default=0, metavar="S", help="seed of the random pick (default 0)"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """The check, printed; then the report when ``--report`` is given. Returns the check's exit status."""
    from ..data.check import check_and_print
    from ..outputs import check_output_folder

    if args.report:  # a file, a device or a socket named --report: one line before the scan
        check_output_folder(args.report, "--report")
    options = vars(DataOptions.from_namespace(args))
    status, result = check_and_print(args.data, args.model, dump=args.dump, show=args.show, **options)
    if args.report and result is not None:
        from ..reports.check_data import write_report

        path = write_report(result, args.data, args.report, args.report_samples, args.report_seed)
        print(f"report: {path}")
    return status
