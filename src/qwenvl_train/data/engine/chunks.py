"""The scan in chunks: consecutive records of one file scanned together (in a worker process when there are
several), and the chunks merged in input order into the columns.

- :class:`ChunkJob`: the records of one chunk, as they travel to a worker.
- :class:`ChunkScanner`: what a worker runs on a job: each record decoded (:func:`~.records.sample_from_record`),
  scanned (:func:`~.samples.scan_sample`), its images checked (:func:`~.samples.check_image`, each distinct image
  once per process) and counted into a :class:`ChunkScan`.
- :class:`ChunkScan`: a chunk's counts and errors, image errors joined to their samples, and its kept samples
  packed (:class:`~.columns.ItemsPart`): what travels back. It holds nothing about other chunks, so chunks can be
  scanned in any process, in any order.
- :class:`Assembler`: the chunk scans merged in input order (duplicate ids over the whole input, distinct images,
  first examples), the kept samples written to the columns, and a file forgotten when it turns out to be
  unreadable after some of its records were scanned.

A sample with any error is never kept; whether errors stop training or are skipped is the caller's choice
(``on_error``, applied by :meth:`.columns.ScanResult.raise_for_errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ...format.render import TextEncoder
from ...format.sample import DataProblem
from ..options import DataOptions
from .columns import Columns, ItemsPart, ItemsWriter, PartBuilder, ScanItems
from .records import Record, sample_from_record
from .result import DUPLICATE_EXAMPLES, LONG_EXAMPLES, ScanResult, ScanSummary
from .samples import SampleScan, check_image, scan_sample

VERDICT_MEMO = 1 << 16  # image verdicts a process remembers (then it starts over: a memo, not a record)


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

    def take(self, offset: int) -> Record:
        """Record ``offset`` as it was read, its text dropped from the job (each record is decoded once: a long
        record's text goes before its sample is rendered). The job carries plain lists instead of the
        :class:`Record` s: for 256 records they pickle and unpickle about 7 times faster (40 us against 270 us)."""
        record = Record(self.texts[offset], self.lines[offset], self.first_index + offset)
        self.texts[offset] = ""
        return record


class ChunkScan:
    """The samples of one chunk of one file, image errors joined, counted, kept ones packed. It holds nothing
    about other chunks, so chunks can be scanned in any process, in any order.

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
                sample.errors.append(DataProblem(sample.file, reason, sample.id, turn, sample.line))
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
    """A :class:`ChunkJob` decoded, scanned and counted: what each worker process of the scan runs. Each distinct
    image is checked once per process (a bounded memo).

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
        for offset in range(len(job.texts)):
            record = job.take(offset)
            raw = sample_from_record(record, file)
            del record  # the last reference to its text
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
    """Chunk scans merged in input order, their kept samples written to columns.

    Call :meth:`begin_file`, :meth:`add` for each chunk of that file in order, :meth:`end_file` with the
    file's whole-file errors and notes, and so on for every file; then :meth:`finish`.

    Args:
        files: the data files, in order.
        options, n_queries: what the scan runs with.
        columns: where the kept samples go (see :func:`.columns.result_columns`).
    """

    def __init__(self, files: Sequence[str], options: DataOptions, n_queries: int, columns: Columns) -> None:
        self.files = list(files)
        self.options, self.n_queries = options, n_queries
        self.columns = columns
        self.writer = ItemsWriter(columns)
        self.total = ScanSummary()
        self.file_errors: list[DataProblem] = []
        self.first_seen: dict[str, int] = {}  # explicit id -> where the first sample using it is (packed)
        self.image_refs: set[str] = set()
        self.bad_images: set[str] = set()
        self.current: _FileState | None = None

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

    def end_file(self, errors: Sequence[DataProblem], notes: Sequence[str]) -> None:
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
