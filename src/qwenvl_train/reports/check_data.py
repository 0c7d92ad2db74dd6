"""``qwenvl-train check-data ... --report DIR``: the check as a page with pictures.

``DIR/index.html`` holds what check-data prints (the counts and every error), a histogram of the sample lengths
against ``--model_max_length``, and a gallery: the first N samples with a picture, a seeded random N of the others
(``--report-samples N``, ``--report-seed S``) and every sample with an error that has a picture (the first
``ERROR_CARDS``), each picture with every ``<box>``/``<quad>`` of the conversation drawn on the picture it refers
to (the latest ``<img>`` before it) and labelled with its ref, the conversation beside it.

The sample texts are read again from the data files with the scan engine's record reader, one record at a time:
only the samples shown are kept. The lengths come from the scan result.
"""

from __future__ import annotations

import argparse
import io
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .page import ReportError

if TYPE_CHECKING:
    from ..data.engine import ScanResult
    from ..format.sample import DataProblem, Sample
    from .page import Page

DEFAULT_SAMPLES = 24
ERROR_CARDS = 200  # samples with errors shown at most (every error is listed above the gallery regardless)
ERROR_LINES = 2000  # error lines listed on the page at most (check-data prints them all)


@dataclass
class Shown:
    """A sample picked for the gallery: where it is in the input, why it is shown, its errors."""

    position: int
    sample: Sample
    pictures: list[str]
    errors: list[str] = field(default_factory=list)


@dataclass
class Gallery:
    """The samples picked, by section."""

    first: list[Shown] = field(default_factory=list)
    random: list[Shown] = field(default_factory=list)
    errors: list[Shown] = field(default_factory=list)
    with_pictures: int = 0
    error_samples: int = 0


def pictures_of(sample: Sample) -> list[str]:
    """The distinct pictures a sample names, in order."""
    from ..format.markup import split_markup

    refs = [p.value for turn in sample.turns for p in split_markup(turn.value) if p.key == "image"]
    return list(dict.fromkeys(refs))


def _key(file: str | Path, line: int | None, sample_id: str | None) -> tuple[str, int | None, str | None]:
    return str(Path(file)), line, sample_id


def pick_samples(
    paths: Sequence[str | Path],
    errors: Sequence[DataProblem],
    n: int,
    seed: int,
    error_cards: int = ERROR_CARDS,
) -> Gallery:
    """Read the data files once more, record by record, keeping only what the gallery shows (see the module
    docstring); a file lost whole (its records were errors) shows nothing."""
    from ..data.engine.records import FileRecords, sample_from_record

    by_sample: dict[tuple[str, int | None, str | None], list[str]] = defaultdict(list)
    for error in errors:
        if error.sample_id is not None and not error.whole_file:
            by_sample[_key(error.file, error.line, error.sample_id)].append(str(error))
    rng = random.Random(seed)
    gallery = Gallery()
    others = 0  # samples with a picture neither first nor with an error: the random pick's population
    position = 0
    for path in paths:
        records = FileRecords(Path(path))
        for record in records:
            sample = sample_from_record(record, records.file)
            position += 1
            pictures = pictures_of(sample)
            if not pictures:
                continue
            gallery.with_pictures += 1
            found = by_sample.get(_key(records.file, sample.line, sample.id), [])
            shown = Shown(position, sample, pictures, found)
            if found:
                gallery.error_samples += 1
            if len(gallery.first) < n:
                gallery.first.append(shown)
            elif found:
                if len(gallery.errors) < error_cards:
                    gallery.errors.append(shown)
            else:  # reservoir sampling: each of the others has the same chance, whatever the input's size
                others += 1
                if len(gallery.random) < n:
                    gallery.random.append(shown)
                elif (j := rng.randrange(others)) < n:
                    gallery.random[j] = shown
        if records.errors:
            lost = str(records.file)
            for part in (gallery.first, gallery.random, gallery.errors):
                part[:] = [s for s in part if str(s.sample.file) != lost]
    gallery.random.sort(key=lambda s: s.position)
    return gallery


def add_card(page: Page, shown: Shown, tags: list[str], number: int) -> int:
    """One sample's card: each picture with the conversation's boxes drawn; returns the pictures saved."""
    from ..format.markup import groundings_by_picture
    from .pictures import drawn, save_picture

    sample = shown.sample
    turns = sample.turns
    placed = groundings_by_picture([t.value for t in turns])
    notes = list(shown.errors)
    unplaced = sum(1 for image, g in placed if image is None and g.points is not None)
    if unplaced:
        notes.append(f"{unplaced} box(es) before any picture: not drawn")
    pictures: list[tuple[Path | None, str]] = []
    saved = 0
    for j, ref in enumerate(shown.pictures):
        boxes = drawn([g for image, g in placed if image == ref])
        out = page.images / f"sample-{number:04d}-{j}.png"
        why_not = save_picture(ref, sample.file.parent, boxes, out)
        pictures.append((None, why_not) if why_not else (out, f"{ref} ({len(boxes)} box(es))"))
        saved += why_not is None
    conversation = ([("system", sample.system)] if sample.system is not None else []) + [
        (t.role, t.value) for t in turns
    ]
    where = f"{sample.file}:{sample.line}" if sample.line else str(sample.file)
    title = f"sample {sample.id!r} ({where})"
    page.card(
        title, tags + (["error"] if shown.errors else []), pictures, conversation, notes, bool(shown.errors)
    )
    return saved


def write_report(
    result: ScanResult,
    paths: Sequence[str | Path],
    folder: str | Path,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> Path:
    """Write the check-data report for ``result`` (the scan of ``paths``) into ``folder``; returns ``index.html``.

    Raises:
        ReportError: the folder cannot be written.
    """
    from ..data.check import print_errors, print_report
    from .page import Page
    from .plots import length_histogram

    try:
        page = Page(folder, "check-data report")
        summary = result.summary
        page.paragraph("data: " + ", ".join(str(p) for p in paths))
        page.heading("Counts")
        counts = io.StringIO()
        print_report(result, counts)
        page.preformatted(counts.getvalue())
        page.heading(f"Errors ({len(summary.errors)})")
        verdict = io.StringIO()
        print_errors(result, verdict)
        errors = [str(e) for e in summary.errors]
        if errors:
            page.errors(errors, ERROR_LINES)
        listed = {f"  {line}" for line in errors}  # the verdict without the error lines listed above
        rest = [line for line in verdict.getvalue().splitlines() if line.strip() and line not in listed]
        page.preformatted("\n".join(rest))
        page.heading("Sample lengths")
        histogram = length_histogram(result.lengths, summary.max_len, page.images / "lengths.png")
        page.figure(histogram, "histogram of sample lengths")
        gallery = pick_samples(paths, summary.errors, samples, seed)
        page.heading("Samples")
        page.paragraph(
            f"{gallery.with_pictures} samples with pictures, {gallery.error_samples} of them with errors. Boxes "
            "and quads are drawn on the picture they refer to (the latest <img> before them), labelled with "
            "their ref."
        )
        number = 0
        sections = (
            (f"The first {len(gallery.first)}", gallery.first, "first"),
            (f"{len(gallery.random)} more at random (seed {seed})", gallery.random, "random"),
            (f"Samples with errors ({len(gallery.errors)} more)", gallery.errors, "error"),
        )
        for title, shown_list, tag in sections:
            if not shown_list:
                continue
            page.heading(title)
            if tag == "error" and gallery.error_samples > len(gallery.errors) + sum(
                bool(s.errors) for s in gallery.first
            ):
                page.paragraph(f"only the first {len(gallery.errors)} are shown")
            for shown in shown_list:
                number += 1
                add_card(page, shown, [tag] if tag != "error" else [], number)
        return page.write()
    except OSError as exc:
        raise ReportError(f"check-data --report {folder}: cannot write the report: {exc}") from None


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``check-data`` (the data layer's command) with the ``--report`` options."""
    from ..data.check import add_parser as add_check_data

    parser = add_check_data(subparsers)
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
    """``check-data``, then the report when ``--report`` is given."""
    from ..data.check import check_data
    from ..data.options import DataOptions
    from ..outputs import check_output_folder

    if args.report:  # a file, a device or a socket named --report: one line before the scan
        check_output_folder(args.report, "--report")

    def report(result: Any, tokenizer: Any) -> None:
        path = write_report(result, args.data, args.report, args.report_samples, args.report_seed)
        print(f"report: {path}")

    options = vars(DataOptions.from_namespace(args))
    on_result = report if args.report else None
    return check_data(args.data, args.model, dump=args.dump, show=args.show, on_result=on_result, **options)
