"""``qwenvl-train eval``: generate the last answer of every conversation and score it.

    qwenvl-train eval --model output_qwen --data data/test.json --out results.json --batch-size 8

Box answers are scored by the IoU of each reference box with its predicted box (Acc@0.5, mean IoU), other answers
by exact match after normalisation (see qwenvl_train.inference.metrics). Decoding is greedy unless --sample.
A table is printed at the end; --out gets the metrics and every sample's prompt, reference, prediction and scores;
--report DIR writes a page with the metrics and each answer's boxes drawn on its picture, worst IoU first.
A sample that cannot be evaluated (turns not alternating, no answer at the end, a malformed reference box, an
image that cannot be read) stops the run with one line naming it, or is skipped and counted with --on-error skip.

    qwenvl-train eval --benchmark textvqa_val --data textvqa_val.jsonl --questions Q.json --annotations A.json \
        --model DIR [--adapter DIR] [--save-predictions P.jsonl] [--resume] --out METRICS.json [--report DIR]
    qwenvl-train eval --benchmark refcoco_val --data refcoco_val.jsonl --predictions P.jsonl --out METRICS.json

asks an original eval_mm benchmark exactly as the Qwen-VL scripts do (their prompts, decoding and metrics; see
qwenvl_train.eval_mm) and prints its metrics; --predictions scores saved answers without a model; --report DIR
writes a page with the metrics, the breakdowns and the worst answers with their pictures. Under
`torchrun --nproc_per_node N -m qwenvl_train eval --benchmark ...` the questions are split over the ranks.

    qwenvl-train eval --compare base.json tuned.json [--out TABLE.md] [--chart CHART.png]

compares metrics files of benchmark runs (the first is the base) in one table with the paper's figures beside them
(see qwenvl_train.eval_mm.compare); no model is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .model_options import add_generation_arguments, add_model_arguments, generation_overrides, positive_int

#: Options that only ``--benchmark`` reads (attribute names).
BENCHMARK_ONLY = (
    "questions",
    "annotations",
    "image_root",
    "predictions",
    "save_predictions",
    "resume",
    "scoring",
)


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``eval --benchmark`` (issue #26's command line)."""
    group = parser.add_argument_group("benchmarks (the original Qwen-VL eval_mm scripts, reproduced)")
    group.add_argument(
        "--benchmark",
        metavar="NAME",
        help="an original eval_mm benchmark: textvqa_val, vqav2_val, docvqa_val, chartqa_test_human, gqa_testdev, "
        "refcoco_val, scienceqa_test_img, seed_bench_image, flickr, nocaps, mme... (--data is its file, unchanged)",
    )
    group.add_argument(
        "--questions", metavar="Q.json", help="the official VQA questions JSON (VQA-score family)"
    )
    group.add_argument(
        "--annotations",
        metavar="A.json",
        help="the official VQA annotations JSON, DocVQA's val_v1.0.json, or SEED-Bench.json (its dimensions)",
    )
    group.add_argument(
        "--image-root", metavar="DIR", help="relative picture paths of --data resolve here (default: the current "
        "directory, as the original scripts)"
    )  # fmt: skip
    group.add_argument(
        "--predictions",
        metavar="FILE",
        help="score these saved answers (JSON list or JSON Lines) without a model",
    )
    group.add_argument(
        "--save-predictions",
        metavar="FILE",
        help="append every answer here as it comes (JSON Lines, flushed)",
    )
    group.add_argument(
        "--resume", action="store_true", help="skip the questions already answered in --save-predictions"
    )
    group.add_argument(
        "--scoring",
        choices=("original", "official"),
        default=None,
        help="original (default): the numbers the original scripts print, quirks included; official: the "
        "benchmarks' own definitions where they differ",
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
        help="also write DIR/index.html: the metrics and every answer's boxes drawn on its picture, worst first "
        "(with --benchmark: the breakdowns, and the answers lowest score first)",
    )
    parser.add_argument(
        "--report-samples",
        type=positive_int,
        default=200,
        metavar="N",
        help="answers shown in the report, the worst first (default 200)",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="METRICS",
        help="compare benchmark metrics files (a file, a JSON list or a folder per model; the first is the base) "
        "in one table with the paper's figures; --out gets the markdown table",
    )
    parser.add_argument("--chart", metavar="PNG", help="with --compare: also draw the table as a bar chart")
    add_benchmark_arguments(parser)
    add_generation_arguments(parser, greedy_default=True)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Read the data, load the model, evaluate, print the table, write ``--out`` (or compare metrics files)."""
    from ..errors import ConfigurationError

    if args.compare:
        if args.model or args.data:
            raise ConfigurationError(
                "--compare reads metrics files and loads no model: drop --model and --data"
            )
        return _compare(args)
    if args.benchmark:
        return _benchmark(args)
    if any(getattr(args, key) for key in BENCHMARK_ONLY):
        options = ", ".join("--" + key.replace("_", "-") for key in BENCHMARK_ONLY if getattr(args, key))
        raise ConfigurationError(f"{options}: only with --benchmark NAME")
    if args.chart:
        raise ConfigurationError("--chart goes with --compare")
    if not args.data:
        raise ConfigurationError("eval needs --data FILE (or --compare METRICS... to compare metrics files)")
    from ..inference.loading import load_for_inference, resolve_folders
    from ..outputs import check_output_folder, output_target, write_output, writes_to_stdout

    if args.out:  # before the model runs: a directory or a socket named --out is one line now, not after it
        output_target(args.out, "--out")
    if args.report:
        check_output_folder(args.report, "--report")
    resolve_folders(args.model, args.adapter)  # a bad folder fails at once, before the data and torch load
    from ..inference.evaluate import evaluate_samples, format_table, read_eval_samples
    from ..inference.generation import chat_generation_config
    from ..inference.metrics import summarize

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


def benchmark_report(args: argparse.Namespace, result: dict) -> None:
    """``--report DIR`` of ``eval --benchmark``: the page of ``result`` (what ``run_benchmark`` returns; ``{}`` on
    the ranks other than 0 under torchrun, which write nothing), at most ``--report-samples`` answers, pictures
    resolved against ``--image-root``."""
    if not args.report or not result:
        return
    from ..reports.benchmark import write_benchmark_report

    path = write_benchmark_report(
        result, args.report, image_root=getattr(args, "image_root", None), cards=args.report_samples
    )
    print(f"report: {path}", file=sys.stderr)


def _compare(args: argparse.Namespace) -> int:
    """Print the comparison table of ``--compare``'s metrics files; write it to ``--out`` and the chart to
    ``--chart`` when given."""
    from ..eval_mm.compare import compare

    table = compare(
        [Path(p) for p in args.compare],
        table_out=Path(args.out) if args.out else None,
        chart_out=Path(args.chart) if args.chart else None,
    )
    print(table, end="")
    for what, path in (("table", args.out), ("chart", args.chart)):
        if path:
            print(f"{what}: {path}", file=sys.stderr)
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    """``eval --benchmark``: generate (unless ``--predictions``) and score; print the table, write ``--out``."""
    from ..errors import ConfigurationError

    if not args.data or len(args.data) != 1:
        raise ConfigurationError(
            "--benchmark needs --data FILE: the benchmark's eval_mm file (MME: its task folder)"
        )
    generation = [
        name for name in ("max_new_tokens", "top_p", "temperature") if getattr(args, name) is not None
    ]
    if generation or args.sample:
        named = ", ".join(
            "--" + n.replace("_", "-") for n in generation + (["sample"] if args.sample else [])
        )
        raise ConfigurationError(f"{named}: --benchmark decodes with the original script's settings")
    from ..eval_mm.runner import BenchmarkRun, run_benchmark
    from ..outputs import check_output_folder, output_target, writes_to_stdout

    for value, option in ((args.out, "--out"), (args.save_predictions, "--save-predictions")):
        if value:  # a directory or a socket named here is one line before the model loads
            output_target(value, option)
    if args.report:
        check_output_folder(args.report, "--report")

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    run = BenchmarkRun(
        benchmark=args.benchmark,
        data=Path(args.data[0]),
        questions=path(args.questions),
        annotations=path(args.annotations),
        image_root=path(args.image_root),
        predictions=path(args.predictions),
        model=args.model,
        adapter=args.adapter,
        save_predictions=path(args.save_predictions),
        resume=args.resume,
        out=path(args.out),
        batch_size=args.batch_size,
        scoring=args.scoring or "original",
        on_error="skip" if args.on_error == "skip" else "stop",
        device=args.device,
        dtype=args.dtype,
    )
    result = run_benchmark(run)
    if result:  # rank 0 (the other ranks of a torchrun return nothing)
        for line in result.get("skipped", []):
            print(f"skipped: {line}", file=sys.stderr)
        print(benchmark_table(result), file=sys.stderr if writes_to_stdout(args.out) else sys.stdout)
        if args.out:
            print(f"metrics: {args.out}", file=sys.stderr)
        benchmark_report(args, result)
    return 0


def benchmark_table(result: dict) -> str:
    """The table printed at the end of ``eval --benchmark``: the counts, then one line per metric (0-100 scale,
    MME on its own)."""
    counts = [f"{result.get('num_questions', 0)} question(s)", f"{result.get('num_missing', 0)} missing"]
    for key, what in (("num_skipped", "skipped"), ("num_unknown", "unknown id(s)")):
        if result.get(key):
            counts.append(f"{result[key]} {what}")
    lines = [f"{result.get('benchmark')} ({result.get('scoring', 'original')} scoring): {', '.join(counts)}"]
    metrics = result.get("metrics") or {}
    if not metrics:
        lines.append("no local score: submit the predictions to the benchmark's evaluation server")
        return "\n".join(lines)
    width = max(len("metric"), *(len(k) for k in metrics))
    lines.append(f"{'metric':<{width}}  {'value':>9}")
    lines += [f"{key:<{width}}  {value:>9.2f}" for key, value in metrics.items()]
    return "\n".join(lines)
