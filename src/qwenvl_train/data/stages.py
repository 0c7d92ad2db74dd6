"""The stages of the scan, each callable (and tested) on its own; :mod:`.scan` runs them over files.

1. :class:`~.sources.FileRecords` / :func:`~.sources.read_file`: the records of a file with their structural
   errors (:func:`~.sources.sample_from_record` decodes one).
2. :func:`scan_sample`: one sample, independent of every other: shape and content rules, markup of every
   turn, ids and labels, truncation. It collects every problem of the sample, not only the first.
3. :func:`check_image` / :func:`check_images`: an image passes the ``verify_images`` check (header, full
   decode, or none) or not; :class:`ChunkScanner` checks each distinct image once per process.
4. Counting, in two halves so that the first can run in worker processes: :class:`ChunkScan` joins image
   errors to their samples and counts a chunk of samples of one file, and packs its kept samples;
   :class:`Assembler` merges chunk scans in input order (duplicate ids over the whole input, distinct images,
   first examples), writes the kept samples to columns, and forgets a file that turned out to be unreadable
   after some of its records were scanned. :func:`assemble` does both over samples held in memory.

A sample with any error is never kept; whether errors stop training or are skipped is the caller's choice
(``on_error``, applied by :meth:`.result.ScanResult.raise_for_errors`).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from .chat import IGNORE_INDEX, TextEncoder, parse_turns, render_parsed
from .errors import ImageError
from .images import check_image_header, load_image, resolve_image
from .items import Columns, ItemsPart, ItemsWriter, PartBuilder, ScanItems
from .options import DataOptions
from .result import DUPLICATE_EXAMPLES, LONG_EXAMPLES, ScanResult, ScanSummary, result_columns
from .rules import check_parsed, check_shape, check_values
from .sources import DataError, RawSample, Record, sample_from_record

VERDICT_MEMO = 1 << 16  # image verdicts a process remembers (then it starts over: a memo, not a record)


@dataclass
class SampleScan:
    """What the scan found about one sample, without looking at any other (stage 2).

    Attributes:
        id: the sample id; ``explicit_id``: written in the data (duplicates are counted among these).
        file, line: where the sample is.
        errors: every problem found so far (image problems are added in stage 4).
        image_refs: every image the sample names (resolved), with the turn naming it, to be checked.
        image_ref_turns: the turn of each of ``image_refs``.
        input_ids, trained: the rendered sample after truncation; None when it has errors or is dropped.
        images, image_turns: the images of the kept part.
        length: tokens before truncation (0 when not rendered).
        too_long, cut, turns_removed: what truncation did.
        dropped_first_turn: the ``reference`` policy dropped a leading assistant turn.
        turns: user/assistant turns rendered; ``has_system``: the sample has its own system turn.
        control_strings: literal control-token strings kept as text.
    """

    id: str
    explicit_id: bool
    file: str
    line: int | None
    errors: list[DataError] = field(default_factory=list)
    image_refs: list[str] = field(default_factory=list)
    image_ref_turns: list[int] = field(default_factory=list)
    input_ids: np.ndarray | None = None
    trained: np.ndarray | None = None
    images: list[str] = field(default_factory=list)
    image_turns: list[int] = field(default_factory=list)
    length: int = 0
    too_long: bool = False
    cut: bool = False
    turns_removed: int = 0
    dropped_first_turn: bool = False
    turns: int = 0
    has_system: bool = False
    control_strings: Counter[str] = field(default_factory=Counter)

    @property
    def where(self) -> str:
        """``file:line`` (or the file alone when the line is unknown)."""
        return f"{self.file}:{self.line}" if self.line else self.file


def scan_sample(raw: RawSample, tokenizer: TextEncoder, options: DataOptions, n_queries: int) -> SampleScan:
    """Stage 2: every rule, markup check and the rendering of one sample, collecting every problem."""
    out = SampleScan(raw.id, raw.explicit_id, str(raw.file), raw.line, errors=list(raw.errors))
    if raw.errors:
        turns, dropped = raw.turns, False  # the order means nothing with turns missing: check the rest
    else:
        turns, dropped, shape_errors = check_shape(raw, options.label_policy)
        out.errors += shape_errors
    out.errors += check_values(raw, turns)
    parsed, markup_errors = parse_turns(turns, allow_bare_boxes=options.allow_bare_boxes)
    out.errors += [raw.error(str(e), e.turn) for e in markup_errors]
    out.errors += check_parsed(raw, turns, parsed)
    base = raw.file.parent
    for value, turn in zip(parsed, turns, strict=True):
        if value is not None:
            for segment in value.images:
                out.image_refs.append(resolve_image(segment, base))
                out.image_ref_turns.append(turn.index)
    if out.errors:
        return out

    rendered = render_parsed(
        turns, parsed, tokenizer, system=raw.system, policy=options.label_policy, n_queries=n_queries
    )
    rendered.images = out.image_refs
    out.dropped_first_turn = dropped
    out.turns, out.has_system = rendered.num_turns, raw.system is not None
    out.control_strings = rendered.control_strings
    out.length = len(rendered)
    if out.length > options.model_max_length:
        out.too_long = True
        shorter = rendered.cut(options.model_max_length) if options.truncation == "cut_turns" else None
        if shorter is None:
            return out
        out.cut, out.turns_removed = True, rendered.num_turns - shorter.num_turns
        rendered = shorter
    out.input_ids = np.array(rendered.input_ids, dtype=np.int32)
    out.trained = np.array(rendered.labels, dtype=np.int32) != IGNORE_INDEX
    out.images, out.image_turns = rendered.images, rendered.image_turns
    return out


def check_image(ref: str, options: DataOptions) -> str | None:
    """Stage 3 for one image: None when it passes the ``verify_images`` check, else the one-line reason."""
    try:
        if options.verify_images == "header":
            check_image_header(ref, max_pixels=options.max_image_pixels)
        elif options.verify_images == "full":
            load_image(ref, max_pixels=options.max_image_pixels, timeout=options.image_timeout).close()
    except ImageError as exc:
        return str(exc)
    return None


def check_images(
    refs: Iterable[str], options: DataOptions, progress: bool | None = None
) -> dict[str, str | None]:
    """Stage 3: each distinct image checked once; ``ref -> None`` (fine) or the reason it is not."""
    distinct = list(dict.fromkeys(refs))
    if options.verify_images == "none":
        return dict.fromkeys(distinct)
    show = progress if progress is not None else len(distinct) >= 200
    bar = tqdm(distinct, desc="checking images", unit="image", disable=None if show else True)
    return {ref: check_image(ref, options) for ref in bar}


class ChunkJob(NamedTuple):
    """Consecutive records of one data file, scanned together (in a worker process when there are several):
    their texts and lines, and the index of the first (plain lists: what pickles fastest).

    Attributes:
        file_index, file: the data file.
        first_index: the record index (``#N``) of the first record.
        texts, lines: each record's JSON text and the line where it starts.
    """

    file_index: int
    file: str
    first_index: int
    texts: list[str]
    lines: list[int]

    @classmethod
    def of(cls, file_index: int, file: str, records: Sequence[Record]) -> ChunkJob:
        """The job for ``records`` (consecutive records of ``file``)."""
        return cls(file_index, file, records[0].index, [r.text for r in records], [r.line for r in records])

    def records(self) -> Iterator[Record]:
        for offset, (text, line) in enumerate(zip(self.texts, self.lines, strict=True)):
            yield Record(text, line, self.first_index + offset)


class ChunkScan:
    """Stage 4, first half: the samples of one chunk of one file, image errors joined, counted, kept ones
    packed. It holds nothing about other chunks, so chunks can be scanned in any process, in any order.

    Attributes:
        file_index: the data file.
        summary: the counts, errors and long examples of this chunk (duplicates are the merge's job).
        explicit_ids, explicit_lines: every id written in the data, in order, with its line.
        image_refs: the distinct images named; ``bad_images``: those the check refused.
        lengths: tokens before truncation of each sample without error (set by :meth:`finish`).
        items: the kept samples, packed (set by :meth:`finish`).
    """

    def __init__(self, file_index: int) -> None:
        self.file_index = file_index
        self.summary = ScanSummary()
        self.explicit_ids: list[str] = []
        self.explicit_lines: list[int] = []
        self.image_refs: set[str] = set()
        self.bad_images: set[str] = set()
        self.lengths: np.ndarray | None = None
        self.items: ItemsPart | None = None
        self._lengths: list[int] = []
        self._kept: PartBuilder | None = PartBuilder()

    def add(self, sample: SampleScan, verdict: Callable[[str], str | None]) -> None:
        """Count ``sample``; ``verdict(ref)`` is None for an image that passed the check, else the reason."""
        if sample.explicit_id:
            self.explicit_ids.append(sample.id)
            self.explicit_lines.append(sample.line or 0)
        summary = self.summary
        for ref, turn in zip(sample.image_refs, sample.image_ref_turns, strict=True):
            self.image_refs.add(ref)
            reason = verdict(ref)
            if reason is not None:
                self.bad_images.add(ref)
                summary.image_errors += 1
                sample.errors.append(DataError(sample.file, reason, sample.id, turn, sample.line))
        summary.samples_read += 1
        if sample.errors:
            summary.skipped += 1
            summary.errors += sample.errors
            return
        summary.ok += 1
        summary.turns += sample.turns
        summary.system_turns += sample.has_system
        summary.dropped_first_turns += sample.dropped_first_turn
        if sample.control_strings:
            summary.control_strings.update(sample.control_strings)
            summary.control_samples += 1
        self._lengths.append(sample.length)
        if sample.too_long:
            summary.too_long += 1
            if len(summary.long_examples) < LONG_EXAMPLES:
                summary.long_examples.append(f"{sample.where}: sample {sample.id!r}: {sample.length} tokens")
            if not sample.cut:
                summary.dropped_too_long += 1
                return
            summary.cut += 1
            summary.turns_removed += sample.turns_removed
        assert sample.input_ids is not None and sample.trained is not None and self._kept is not None
        summary.images += len(sample.images)
        summary.kept += 1
        self._kept.add(
            sample.id, sample.line, sample.input_ids, sample.trained, sample.images, sample.image_turns
        )

    def finish(self) -> ChunkScan:
        """Pack the kept samples and lengths into arrays (what travels back from a worker); no more :meth:`add`."""
        assert self._kept is not None
        self.items, self.lengths = self._kept.build(), np.asarray(self._lengths, dtype=np.int64)
        self._kept, self._lengths = None, []
        return self


class ChunkScanner:
    """Stages 1 to 4a over a :class:`ChunkJob`: what each worker process of the scan runs. Each distinct image
    is checked once per process (a bounded memo).

    Args:
        tokenizer: anything with ``encode_text``.
        options: the data options.
        n_queries: positions per image span.
    """

    def __init__(self, tokenizer: TextEncoder, options: DataOptions, n_queries: int) -> None:
        self.tokenizer, self.options, self.n_queries = tokenizer, options, n_queries
        self.verdicts: dict[str, str | None] = {}

    def verdict(self, ref: str) -> str | None:
        """:func:`check_image` of ``ref``, remembered."""
        try:
            return self.verdicts[ref]
        except KeyError:
            pass
        if len(self.verdicts) >= VERDICT_MEMO:
            self.verdicts.clear()
        reason = self.verdicts[ref] = check_image(ref, self.options)
        return reason

    def __call__(self, job: ChunkJob) -> ChunkScan:
        file = Path(job.file)
        chunk = ChunkScan(job.file_index)
        for record in job.records():
            raw = sample_from_record(record, file)
            chunk.add(scan_sample(raw, self.tokenizer, self.options, self.n_queries), self.verdict)
        return chunk.finish()


@dataclass
class _FileState:
    """What the current file has given so far: merged into the totals when it ends well, dropped otherwise."""

    file_index: int
    summary: ScanSummary
    mark: tuple[dict[str, int], dict[str, int]]
    first_seen: dict[str, int] = field(default_factory=dict)
    image_refs: set[str] = field(default_factory=set)
    bad_images: set[str] = field(default_factory=set)


class Assembler:
    """Stage 4, second half: chunk scans merged in input order, their kept samples written to columns.

    Call :meth:`begin_file`, :meth:`add` for each chunk of that file in order, :meth:`end_file` with the
    file's whole-file errors and notes, and so on for every file; then :meth:`finish`.

    Args:
        files: the data files, in order.
        options, n_queries: what the scan runs with.
        columns: where the kept samples go (see :func:`.result.result_columns`).
    """

    def __init__(self, files: Sequence[str], options: DataOptions, n_queries: int, columns: Columns) -> None:
        self.files = list(files)
        self.options, self.n_queries = options, n_queries
        self.columns = columns
        self.writer = ItemsWriter(columns)
        self.total = ScanSummary()
        self.file_errors: list[DataError] = []
        self.first_seen: dict[str, int] = {}  # explicit id -> where the first sample using it is (packed)
        self.image_refs: set[str] = set()
        self.bad_images: set[str] = set()
        self.current: _FileState | None = None

    def file_index(self, file: str) -> int:
        """The index of ``file`` among the files (added when it is not one of them)."""
        if file not in self.files:
            self.files.append(file)
        return self.files.index(file)

    def _where(self, packed: int) -> str:
        file, line = self.files[packed >> 32], packed & 0xFFFFFFFF
        return f"{file}:{line}" if line else file

    def begin_file(self, file_index: int) -> None:
        self.current = _FileState(file_index, ScanSummary(), self.writer.mark())

    def add(self, chunk: ChunkScan) -> None:
        """Merge the next chunk of the current file."""
        state = self.current
        assert state is not None and chunk.file_index == state.file_index
        assert chunk.items is not None and chunk.lengths is not None, "add a finished chunk"
        summary = state.summary
        for sample_id, line in zip(chunk.explicit_ids, chunk.explicit_lines, strict=True):
            where = state.file_index << 32 | line
            first = self.first_seen.get(sample_id)
            if first is None:
                first = state.first_seen.get(sample_id)
            if first is None:
                state.first_seen[sample_id] = where
                continue
            summary.duplicate_ids += 1
            if len(summary.duplicate_examples) < DUPLICATE_EXAMPLES:
                summary.duplicate_examples.append(
                    f"{sample_id!r} at {self._where(where)}, first at {self._where(first)}"
                )
        summary.add(chunk.summary)
        state.image_refs |= chunk.image_refs
        state.bad_images |= chunk.bad_images
        self.writer.add(chunk.items, state.file_index)
        self.columns.append("lengths", chunk.lengths)

    def end_file(self, errors: Sequence[DataError], notes: Sequence[str]) -> None:
        """End the current file: keep what it gave, or forget it all when it has whole-file ``errors``."""
        state, self.current = self.current, None
        assert state is not None
        if errors:
            self.writer.rollback(state.mark)
            self.file_errors += errors
            return
        self.total.add(state.summary)
        self.total.notes += notes
        if self.first_seen:  # (the first file's are taken as they are: no copy of a million ids)
            self.first_seen.update(state.first_seen)
        else:
            self.first_seen = state.first_seen
        self.image_refs = self.image_refs | state.image_refs if self.image_refs else state.image_refs
        self.bad_images |= state.bad_images

    def finish(self, folder: Path | None = None, sync: bool = False) -> ScanResult:
        """The result; ``folder`` is where the columns were written (None: in memory), ``sync`` flushes them to
        the disk."""
        summary = self.total
        summary.files = len(self.files)
        summary.unreadable_files = len({e.file for e in self.file_errors})
        summary.errors = self.file_errors + summary.errors  # whole-file errors first
        summary.distinct_images = len(self.image_refs)
        summary.max_len = self.options.model_max_length
        summary.truncation, summary.policy = self.options.truncation, self.options.label_policy
        arrays = self.columns.close(sync=sync)
        items = ScanItems.from_columns(arrays, self.files, folder)
        items.column_lengths.pop("lengths")
        assert summary.kept == len(items)
        bad_images = sorted(self.bad_images)
        return ScanResult(items, summary, arrays["lengths"], self.options, self.n_queries, bad_images, folder)


def assemble(
    files: Sequence[str],
    file_errors: Sequence[DataError],
    notes: Sequence[str],
    samples: Sequence[SampleScan],
    image_status: Mapping[str, str | None],
    options: DataOptions,
    n_queries: int,
) -> ScanResult:
    """Stage 4 over samples held in memory: join image errors (``image_status``, from :func:`check_images`) to
    their samples, count everything and pack the kept samples (in memory)."""
    assembler = Assembler(files, options, n_queries, result_columns(None))
    for file, group in itertools.groupby(samples, key=lambda sample: sample.file):
        chunk = ChunkScan(assembler.file_index(file))
        for sample in group:
            chunk.add(sample, image_status.get)
        assembler.begin_file(chunk.file_index)
        assembler.add(chunk.finish())
        assembler.end_file([], [])
    assembler.file_errors += file_errors
    assembler.total.notes += notes
    return assembler.finish()
