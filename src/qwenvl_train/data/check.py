"""What ``qwenvl-train check-data`` does (:mod:`qwenvl_train.commands.check_data`): the scan training runs, plus a
printer.

    qwenvl-train check-data data/demo.json --model ./tiny-model --model_max_length 2048 --show 2 --dump ids.jsonl

Runs :func:`.engine.scan`, exactly what training runs, with the same data options under the same names
(``--model_max_length``, ``--truncation``, ``--label_policy``, ``--on_error``, ...), and reports samples, turns,
images, token-length percentiles (image spans counted), samples over the maximum length and what truncation
does to them, literal control tokens (kept as text), duplicate ids, notes, and every error as one line naming
file, sample id and turn. The one difference from training: ``--verify_images`` defaults to ``full`` here, so
every image is decoded and every URL fetched (into the download cache training reads from), and truncated
files are found before training starts. Exit status: 0 when training would start with these options, 1 when it
would stop (an error under ``--on_error raise``, or no sample left), 2 when the model directory is unusable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..format import tokens as st
from ..format.render import IGNORE_INDEX, TextEncoder
from .options import DataOptions

if TYPE_CHECKING:  # the scan imports numpy: only when data is checked, not for --help
    import numpy as np

    from .engine import ScanResult

PERCENTILES = (50, 90, 95, 99)
CHECK_DEFAULTS = {"verify_images": "full"}  # check-data decodes every image; training checks headers


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


def _percentiles(lengths: np.ndarray) -> str:
    import numpy as np

    if not len(lengths):
        return "no samples"
    parts = [f"min {lengths.min()}"] + [f"p{p} {int(np.percentile(lengths, p))}" for p in PERCENTILES]
    return ", ".join(parts + [f"max {lengths.max()}", f"mean {lengths.mean():.0f}"])


def _load_tokenizer(model_dir: Path) -> TextEncoder:
    from ..tokenizer import QwenVLTokenizer

    vocab = model_dir / "qwen.tiktoken"
    if not vocab.is_file():
        raise FileNotFoundError(
            f"{vocab}: no such file (the model directory needs qwen.tiktoken; fetch it with "
            f"`qwenvl-train vocab --dest {model_dir}`)"
        )
    return QwenVLTokenizer(vocab_file=str(vocab))


def check_data(
    paths: Sequence[str | Path],
    model_dir: str | Path,
    *,
    dump: str | Path | None = None,
    show: int = 0,
    out: TextIO | None = None,
    tokenizer: TextEncoder | None = None,
    progress: bool | None = None,
    **options: Any,
) -> int:
    """Scan data files the way training does and print a report (:func:`check_and_print` without its result).

    Returns:
        The exit status: 0 when training would start, 1 when it would stop, 2 when the model directory is
        unusable.
    """
    return check_and_print(
        paths, model_dir, dump=dump, show=show, out=out, tokenizer=tokenizer, progress=progress, **options
    )[0]


def check_and_print(
    paths: Sequence[str | Path],
    model_dir: str | Path,
    *,
    dump: str | Path | None = None,
    show: int = 0,
    out: TextIO | None = None,
    tokenizer: TextEncoder | None = None,
    progress: bool | None = None,
    **options: Any,
) -> tuple[int, ScanResult | None]:
    """Scan data files the way training does and print a report; the scan result goes back to the caller (the
    command writes its picture report from it).

    Args:
        paths: data files.
        model_dir: model directory (``config.json`` for n_queries / image_size, ``qwen.tiktoken``).
        dump: write ``{"id", "input_ids", "labels", "num_images"}`` per sample training gets to this JSONL file
            (``-`` or a device: streamed; see :mod:`qwenvl_train.outputs`).
        show: print this many of those samples with trained spans marked ``[[ ]]``.
        out: where to print (stdout; stderr when ``dump`` is the standard output).
        tokenizer: use this tokenizer instead of loading one from ``model_dir``.
        progress: progress bars (None: for large inputs on a terminal).
        options: :class:`DataOptions` fields; ``verify_images`` defaults to ``full`` here.

    Returns:
        The exit status (0 when training would start, 1 when it would stop, 2 when the model directory is
        unusable) and the scan result (None when the model directory is unusable).
    """
    from ..model.visual_config import vision_settings
    from ..outputs import output_target, writes_to_stdout
    from .engine import scan

    if dump is not None:  # a directory or a socket named --dump: one line before the scan
        output_target(dump, "--dump")
    out = out or (sys.stderr if writes_to_stdout(dump) else sys.stdout)
    model_dir = Path(model_dir)
    data_options = DataOptions(**{**CHECK_DEFAULTS, **options})
    try:
        settings = vision_settings(model_dir)
        tokenizer = tokenizer or _load_tokenizer(model_dir)
    except (OSError, ValueError) as exc:
        print(f"check-data: cannot use model directory {model_dir}: {exc}", file=out)
        return 2, None
    result = scan(paths, tokenizer, data_options, n_queries=settings.n_queries, progress=progress)
    print(f"scan: {result.provenance}", file=out)
    print_report(result, out)
    if dump is not None:
        write_dump(result, dump)
        out.write(f"dumped {len(result.items)} samples to {dump}\n")
    for index in range(min(max(show, 0), len(result.items))):
        item = result.items[index]
        out.write(
            f"\n=== sample {item.id!r} ({item.file}), {len(item.input_ids)} tokens, images: {item.images}\n"
        )
        out.write(format_sample(item.input_ids.tolist(), item.labels.tolist(), tokenizer) + "\n")
    return print_errors(result, out), result


def print_report(result: ScanResult, out: TextIO) -> None:
    """The counts of a scan, one fact per line."""
    s, o, w = result.summary, result.options, out.write
    w(f"files: {s.files}" + (f" ({s.unreadable_files} unreadable)" if s.unreadable_files else "") + "\n")
    for note in s.notes:
        w(f"note: {note}\n")
    w(f"samples: {s.samples_read} read, {s.ok} ok, {s.skipped} with errors\n")
    w(f"turns: {s.turns} user/assistant ({s.system_turns} samples with their own system turn)\n")
    w(f"images: {s.images} ({s.distinct_images} distinct), check: {o.verify_images}\n")
    w(f"policy: {o.label_policy}; image span: {result.n_queries + 2} tokens (n_queries {result.n_queries})\n")
    if s.dropped_first_turns:
        w(f"reference policy: {s.dropped_first_turns} leading assistant turns dropped, as the original did\n")
    w(f"token lengths (image spans counted): {_percentiles(result.lengths)}\n")
    w(f"over max length {s.max_len}: {s.too_long} samples")
    if s.too_long:
        w(
            f" (truncation {s.truncation}: {s.dropped_too_long} dropped, {s.cut} cut at a turn boundary, "
            f"{s.turns_removed} turns removed)"
        )
    w("\n")
    for example in s.long_examples:
        w(f"  long: {example}\n")
    tokens = int(result.items.offsets[-1])
    w(f"training gets: {s.kept} samples, {tokens} tokens\n")
    if s.control_strings:
        detail = ", ".join(f"{tok} x{n}" for tok, n in s.control_strings.most_common())
        w(
            f"literal control tokens (encoded as plain text): {sum(s.control_strings.values())} in "
            f"{s.control_samples} samples: {detail}\n"
        )
    else:
        w("literal control tokens: none\n")
    if s.duplicate_ids:
        w(f"duplicate ids: {s.duplicate_ids} samples reuse an earlier sample's id (not an error), e.g.\n")
        for example in s.duplicate_examples:
            w(f"  {example}\n")
    else:
        w("duplicate ids: none\n")


def write_dump(result: ScanResult, path: str | Path) -> None:
    """Every sample training gets, as JSON Lines: ``id``, ``input_ids``, ``labels``, ``num_images``."""
    from ..outputs import open_output

    with open_output(path, "--dump") as fh:  # atomic for a file; written through for - or a device
        for item in result.items:
            record = {
                "id": item.id,
                "input_ids": item.input_ids.tolist(),
                "labels": item.labels.tolist(),
                "num_images": len(item.images),
            }
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def print_errors(result: ScanResult, out: TextIO) -> int:
    """Every error, one per line; returns the exit status (1 when training would stop)."""
    s = result.summary
    if s.errors:
        out.write(f"\nerrors: {len(s.errors)}\n")
        for e in s.errors:
            out.write(f"  {e}\n")
    else:
        out.write("\nno errors\n")
    if s.errors and result.options.on_error == "raise":
        return 1
    if not s.kept:
        out.write("no sample left to train on\n")
        return 1
    if s.errors:
        out.write(f"with --on_error skip, training skips these {s.skipped} samples\n")
    return 0
