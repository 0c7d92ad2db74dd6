"""``qwenvl-train eval``: generate the last answer of every conversation and score it.

    qwenvl-train eval --model output_qwen --data data/test.json --out results.json --batch-size 8

Box answers are scored by the IoU of each reference box with its predicted box (Acc@0.5, mean IoU), other answers
by exact match after normalisation (see qwenvl_train.inference.metrics). Decoding is greedy unless --sample.
A table is printed at the end; --out gets the metrics and every sample's prompt, reference, prediction and scores;
--report DIR writes a page with the metrics and each answer's boxes drawn on its picture, worst IoU first.
A sample that cannot be evaluated (turns not alternating, no answer at the end, a malformed reference box, an
image that cannot be read) stops the run with one line naming it, or is skipped and counted with --on-error skip.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

from .cli_common import (
    add_generation_arguments,
    add_model_arguments,
    generation_overrides,
    positive_int,
    run_reporting_errors,
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "eval",
        help="score a model's answers on a conversations file (grounding IoU, exact match)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--data",
        required=True,
        nargs="+",
        metavar="FILE",
        help="conversations (.json / .jsonl), training format",
    )
    parser.add_argument(
        "--out",
        metavar="FILE.json",
        help="write the metrics and per-sample results here (-: the standard output, the table then on stderr)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, metavar="N", help="prompts per batch (default 8)"
    )
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="a sample that cannot be evaluated stops the run (raise) or is skipped and counted",
    )
    parser.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="also write DIR/index.html: the metrics and every answer's boxes drawn on its picture, worst first",
    )
    parser.add_argument(
        "--report-samples",
        type=positive_int,
        default=200,
        metavar="N",
        help="answers shown in the report, the worst first (default 200)",
    )
    add_generation_arguments(parser, greedy_default=True)
    parser.set_defaults(func=functools.partial(run_reporting_errors, run))
    return parser


def run(args: argparse.Namespace) -> int:
    """Read the data, load the model, evaluate, print the table, write ``--out``."""
    from ..outputs import check_output_folder, output_target, write_output, writes_to_stdout
    from .evaluate import evaluate_samples, format_table, read_eval_samples
    from .generation import chat_generation_config
    from .loading import load_for_inference
    from .metrics import summarize

    if args.out:  # before the model runs: a directory or a socket named --out is one line now, not after it
        output_target(args.out, "--out")
    if args.report:
        check_output_folder(args.report, "--report")
    samples, errors = read_eval_samples(args.data)
    if errors and args.on_error == "raise":
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        print(f"{len(errors)} error(s) in the data (or pass --on-error skip)", file=sys.stderr)
        return 1
    model, tokenizer = load_for_inference(args.model, args.adapter, args.dtype, args.device)
    config = chat_generation_config(model, **generation_overrides(args))
    results, skipped = evaluate_samples(
        model, tokenizer, samples, config, args.batch_size, args.on_error, progress=True
    )
    skipped = errors + skipped
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)
    metrics = summarize(result.score for result in results)
    metrics["skipped"] = len(skipped)
    print(format_table(metrics), file=sys.stderr if writes_to_stdout(args.out) else sys.stdout)
    if args.out:
        report = {
            "model": args.model,
            "adapter": args.adapter,
            "data": args.data,
            "metrics": metrics,
            "skipped": skipped,
            "samples": [result.to_dict() for result in results],
        }
        write_output(args.out, json.dumps(report, indent=1, ensure_ascii=False) + "\n", "--out")
        print(f"per-sample results: {args.out}", file=sys.stderr)
    if args.report:
        from ..reports.evaluation import write_eval_report

        path = write_eval_report(results, metrics, skipped, args.report, cards=args.report_samples)
        print(f"report: {path}", file=sys.stderr)
    return 0
