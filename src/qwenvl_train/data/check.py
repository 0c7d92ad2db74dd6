"""``qwenvl-train check-data``: read training data exactly as training does and report on it.

    qwenvl-train check-data data/demo.json --model ./tiny-model --max-len 2048 --show 2 --dump ids.jsonl

Reports samples, turns, images, token-length percentiles (image spans counted), samples over the
maximum length, literal control tokens (kept as text), and every error as one line naming file, sample
id and turn. Unlike training, every image is fully decoded (and every URL fetched), so truncated files
are found here. Exit status: 0 clean, 1 when any error was found, 2 when the model directory is unusable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from .. import special_tokens as st
from .chat import IGNORE_INDEX, POLICIES, Policy, TextEncoder
from .dataset import PreparedSample, prepare_samples, vision_settings
from .images import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT, ImageError, load_image
from .sources import count_rejected, read_samples

DEFAULT_MAX_LEN = 2048
PERCENTILES = (50, 90, 95, 99)


def format_sample(input_ids: Sequence[int], labels: Sequence[int], tokenizer: Any) -> str:
    """Decode a sample with trained spans wrapped in ``[[ ]]`` and image pads collapsed."""
    out: list[str] = []
    i = 0
    while i < len(input_ids):
        trained = labels[i] != IGNORE_INDEX
        j = i
        while j < len(input_ids) and (labels[j] != IGNORE_INDEX) == trained:
            j += 1
        text = ""
        k = i
        while k < j:  # collapse runs of <imgpad>
            if input_ids[k] == st.IMG_PAD_ID:
                m = k
                while m < j and input_ids[m] == st.IMG_PAD_ID:
                    m += 1
                text += f"<imgpad x{m - k}>"
                k = m
            else:
                m = k
                while m < j and input_ids[m] != st.IMG_PAD_ID:
                    m += 1
                text += tokenizer.decode(list(input_ids[k:m]))
                k = m
        out.append(f"[[{text}]]" if trained else text)
        i = j
    return "".join(out)


def _percentiles(lengths: list[int]) -> str:
    if not lengths:
        return "no samples"
    arr = np.asarray(lengths)
    parts = [f"min {arr.min()}"] + [f"p{p} {int(np.percentile(arr, p))}" for p in PERCENTILES]
    return ", ".join(parts + [f"max {arr.max()}", f"mean {arr.mean():.0f}"])


def _load_tokenizer(model_dir: Path) -> TextEncoder:
    from ..tokenizer import QwenVLTokenizer

    vocab = model_dir / "qwen.tiktoken"
    if not vocab.is_file():
        raise FileNotFoundError(f"{vocab}: no such file (the model directory needs qwen.tiktoken)")
    return QwenVLTokenizer(vocab_file=str(vocab))


def check_data(
    paths: Sequence[str | Path],
    model_dir: str | Path,
    max_len: int | None = None,
    dump: str | Path | None = None,
    show: int = 0,
    *,
    policy: Policy = "assistant",
    allow_bare_boxes: bool = False,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    image_timeout: float = DEFAULT_TIMEOUT,
    check_images: bool = True,
    out: TextIO | None = None,
    tokenizer: TextEncoder | None = None,
) -> int:
    """Check data files the way training reads them and print a report.

    Args:
        paths: data files.
        model_dir: model directory (``config.json`` for n_queries / image_size, ``qwen.tiktoken``).
        max_len: maximum sample length in tokens (default 2048).
        dump: write ``{"id", "input_ids", "labels", "num_images"}`` per sample to this JSONL file.
        show: print this many samples with trained spans marked ``[[ ]]``.
        policy: label policy, as in training.
        allow_bare_boxes: accept ``<box>`` outside a ref context.
        max_image_pixels: decompression-bomb guard.
        image_timeout: seconds for an http(s) image.
        check_images: decode every image (False: skip image checks).
        out: where to print (stdout).
        tokenizer: use this tokenizer instead of loading one from ``model_dir``.

    Returns:
        The exit status: 0 when no error was found, 1 otherwise, 2 when the model directory is unusable.
    """
    out = out or sys.stdout
    max_len = DEFAULT_MAX_LEN if max_len is None else max_len
    model_dir = Path(model_dir)
    try:
        settings = vision_settings(model_dir)
        tokenizer = tokenizer or _load_tokenizer(model_dir)
    except (OSError, ValueError) as exc:
        print(f"check-data: cannot use model directory {model_dir}: {exc}", file=out)
        return 2

    raw, errors = read_samples(paths)
    rejected, unreadable_files = count_rejected(errors)
    samples_read = len(raw) + rejected
    prepared: list[PreparedSample] = []
    image_status: dict[str, str | None] = {}  # ref -> error message (None when fine); each image once
    bad_image_samples = 0
    progress = tqdm(raw, desc="check-data", unit="sample", disable=None if len(raw) >= 200 else True)
    for sample in progress:
        done, render_errors = prepare_samples(
            [sample],
            tokenizer,
            n_queries=settings.n_queries,
            policy=policy,
            allow_bare_boxes=allow_bare_boxes,
        )
        errors += render_errors
        if not done:
            continue
        item = done[0]
        prepared.append(item)
        if not check_images:
            continue
        sample_bad = False
        for ref, turn in zip(item.rendered.images, item.rendered.image_turns, strict=True):
            if ref not in image_status:
                try:
                    load_image(ref, max_pixels=max_image_pixels, timeout=image_timeout).close()
                    image_status[ref] = None
                except ImageError as exc:
                    image_status[ref] = str(exc)
            if image_status[ref] is not None:
                errors.append(item.error(image_status[ref], turn))
                sample_bad = True
        bad_image_samples += sample_bad

    lengths = [len(p.rendered) for p in prepared]
    turns = sum(len(p.raw.turns) for p in prepared)
    images = sum(len(p.rendered.images) for p in prepared)
    too_long = [p for p in prepared if len(p.rendered) > max_len]
    cuttable = sum(1 for p in too_long if p.rendered.cut(max_len) is not None)
    controls: Counter[str] = Counter()
    control_samples = 0
    for p in prepared:
        controls.update(p.rendered.control_strings)
        control_samples += bool(p.rendered.control_strings)
    system_turns = sum(p.raw.system is not None for p in prepared)

    w = out.write
    w(f"files: {len(list(paths))}" + (f" ({unreadable_files} unreadable)" if unreadable_files else "") + "\n")
    w(
        f"samples: {samples_read} read, {len(prepared) - bad_image_samples} ok, "
        f"{samples_read - len(prepared) + bad_image_samples} with errors\n"
    )
    w(f"turns: {turns} user/assistant ({system_turns} samples with their own system turn)\n")
    w(f"images: {images} ({len(image_status) if check_images else 'not checked'} distinct)\n")
    w(f"policy: {policy}; image span: {settings.n_queries + 2} tokens (n_queries {settings.n_queries})\n")
    w(f"token lengths (image spans counted): {_percentiles(lengths)}\n")
    w(f"over max length {max_len}: {len(too_long)} samples")
    if too_long:
        w(
            f" (truncation=drop drops them; truncation=cut_turns cuts {cuttable} at a turn boundary, drops the rest)"
        )
    w("\n")
    if controls:
        detail = ", ".join(f"{tok} x{n}" for tok, n in controls.most_common())
        w(
            f"literal control tokens (encoded as plain text): {sum(controls.values())} in {control_samples} samples: {detail}\n"
        )
    else:
        w("literal control tokens: none\n")
    for p in too_long[:5]:
        w(f"  long: {p.raw.file}: sample {p.raw.id!r}: {len(p.rendered)} tokens\n")

    if dump is not None:
        with open(dump, "w", encoding="utf-8") as fh:
            for p in prepared:
                record = {
                    "id": p.raw.id,
                    "input_ids": p.rendered.input_ids,
                    "labels": p.rendered.labels,
                    "num_images": len(p.rendered.images),
                }
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        w(f"dumped {len(prepared)} samples to {dump}\n")

    for p in prepared[: max(show, 0)]:
        w(
            f"\n=== sample {p.raw.id!r} ({p.raw.file}), {len(p.rendered)} tokens, images: {p.rendered.images}\n"
        )
        w(format_sample(p.rendered.input_ids, p.rendered.labels, tokenizer) + "\n")

    if errors:
        w(f"\nerrors: {len(errors)}\n")
        for e in errors:
            w(f"  {e}\n")
        return 1
    w("\nno errors\n")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``check-data`` on a CLI's subparsers; the handler is :func:`run`."""
    parser = subparsers.add_parser(
        "check-data",
        help="read training data the way training does and report lengths, images and errors",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``check-data`` arguments."""
    parser.add_argument("data", nargs="+", metavar="DATA", help="data files (.json / .jsonl)")
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="model directory (config.json, qwen.tiktoken)"
    )
    parser.add_argument(
        "--max-len", type=int, default=None, metavar="N", help=f"maximum tokens (default {DEFAULT_MAX_LEN})"
    )
    parser.add_argument(
        "--dump", default=None, metavar="FILE.jsonl", help="write ids and labels of every sample"
    )
    parser.add_argument(
        "--show", type=int, default=0, metavar="K", help="print K samples with trained spans in [[ ]]"
    )
    parser.add_argument(
        "--policy", choices=POLICIES, default="assistant", help="label policy (default assistant)"
    )
    parser.add_argument(
        "--allow-bare-boxes", action="store_true", help="accept <box> not attached to a <ref>"
    )
    parser.add_argument(
        "--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="decompression-bomb limit"
    )
    parser.add_argument(
        "--image-timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per http(s) image"
    )
    parser.add_argument("--no-images", action="store_true", help="do not open images")


def run(args: argparse.Namespace) -> int:
    """Handler for parsed ``check-data`` arguments; returns the exit status."""
    return check_data(
        args.data,
        args.model,
        max_len=args.max_len,
        dump=args.dump,
        show=args.show,
        policy=args.policy,
        allow_bare_boxes=args.allow_bare_boxes,
        max_image_pixels=args.max_image_pixels,
        image_timeout=args.image_timeout,
        check_images=not args.no_images,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qwenvl_train.data.check DATA... --model DIR``."""
    parser = argparse.ArgumentParser(prog="qwenvl-train check-data", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
