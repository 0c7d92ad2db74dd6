"""``qwenvl-train convert --from FORMAT SRC... --out FILE.jsonl``: the command line of the importers
(:mod:`qwenvl_train.data.convert`).

    qwenvl-train convert --from llava llava_instruct.json --image-root coco/train2017 --out data/train.jsonl

Prints every record left out (``--on-error skip``) as one line naming file, record and reason, then a summary:
records read, samples written, records skipped by reason, images written. Under ``--on-error raise`` (the
default) the first problem ends the command with that line and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.convert.formats import FORMATS


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``convert`` to the ``qwenvl-train`` sub-commands."""
    p = sub.add_parser(
        "convert",
        help="convert LLaVA, ShareGPT, ms-swift, parquet, COCO, RefCOCO or OpenAI chat data to the conversations "
        "format",
        description="Convert data in the formats people already have to the original conversations format "
        "(JSON Lines) that check-data and train read; boxes become Qwen-VL's [0, 1000) integers from each image's "
        "real size.",
    )
    p.add_argument(
        "--from", dest="source_format", required=True, choices=sorted(FORMATS), help="the source format"
    )
    p.add_argument("sources", nargs="*", metavar="SRC", help="source files, converted in order")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE.jsonl",
        help="the JSON Lines file to write (- or /dev/stdout: the standard output, the summary then on stderr)",
    )
    p.add_argument(
        "--image-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder relative image paths of the data are resolved against (default: each source file's folder)",
    )
    p.add_argument(
        "--images-out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder to write image bytes carried in the data to (parquet; openai's data: URLs and --download)",
    )
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="a record that cannot be converted stops the command (raise) or is left out, printed and counted "
        "(skip)",
    )
    g = p.add_argument_group("sharegpt")
    g.add_argument(
        "--dataset-info",
        type=Path,
        default=None,
        metavar="FILE",
        help="LLaMA-Factory's dataset_info.json (or a v1 dataset .yaml): its entry names the columns and role tags (and the file, when "
        "no SRC is given)",
    )
    g.add_argument(
        "--dataset",
        default=None,
        metavar="NAME",
        help="the entry of --dataset-info to use (needed when it has several)",
    )
    g = p.add_argument_group("openai")
    g.add_argument(
        "--download",
        action="store_true",
        help="fetch http(s) image URLs once (public addresses only, with the server's size and time limits) into "
        "--images-out, instead of keeping the URLs",
    )
    g = p.add_argument_group("coco and refcoco")
    g.add_argument(
        "--question",
        action="append",
        default=None,
        metavar="TEMPLATE",
        help="a question with {ref} where the object's name goes; repeat for several, taken in turn",
    )
    g.add_argument(
        "--lang",
        choices=("en", "zh", "both"),
        default="both",
        help="the built-in questions: English, Chinese, or both in turn (default)",
    )
    g.add_argument(
        "--instances",
        type=Path,
        default=None,
        metavar="FILE",
        help="refcoco: the COCO instances file the refs name",
    )
    g.add_argument(
        "--split",
        default=None,
        metavar="NAME",
        help="refcoco: keep the refs of this split (train, val, testA...)",
    )
    g = p.add_argument_group("parquet")
    g.add_argument(
        "--batch-size", type=int, default=None, metavar="N", help="rows read at a time (default 64)"
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``convert``; prints the summary. Exit status 0 (problems under ``--on-error skip`` included)."""
    from ..data.convert.common import Conversion, ConvertError, run_conversion
    from ..data.convert.formats import format_module
    from ..outputs import writes_to_stdout

    module = format_module(args.source_format)
    options = {
        k: v for k, v in vars(args).items() if k not in ("func", "command", "sources", "out", "on_error")
    }
    sources = [Path(s) for s in args.sources]
    if args.download:
        if args.source_format != "openai":
            raise ConvertError(f"--download is for --from openai, not {args.source_format}")
        options["fetch"] = guarded_fetch
    if hasattr(module, "setup"):  # the format's own options; may name the sources
        sources = module.setup(options, sources)
    if not sources:
        raise ConvertError("no source file given")
    if args.images_out is not None and not getattr(module, "WRITES_IMAGES", False):
        raise ConvertError(
            f"--images-out is for data carrying image bytes (parquet, openai), not {args.source_format}"
        )
    job = Conversion(args.out, image_root=args.image_root, images_out=args.images_out, options=options)
    stats = run_conversion((module.items, module.convert), sources, job, args.on_error)
    summary_to = sys.stderr if writes_to_stdout(args.out) else sys.stdout  # the samples may be on stdout
    print(stats.summary(args.out, args.images_out), file=summary_to)
    return 0


#: ``--download`` has no way to reach a private network (unlike ``serve --allow-private-urls``): what to do instead.
PRIVATE_HINT = "--download fetches from public addresses only: copy the picture and give its path"


def guarded_fetch(url: str) -> bytes:
    """The bytes at ``url``, fetched by ``serve``'s fetcher (every address public, each redirect checked, the
    loader's size limit, one deadline); its refusal becomes the record's one-line error."""
    from ..data.convert.common import RecordError
    from ..serve.fetch import ImagePolicy, fetch_url
    from ..serve.schema import APIError

    param = "image_url"
    try:
        return fetch_url(url, ImagePolicy(private_hint=PRIVATE_HINT), param)
    except APIError as exc:
        raise RecordError(
            f"cannot download: {exc.message.removeprefix(repr(param) + ': ')}", "download failed"
        ) from None
