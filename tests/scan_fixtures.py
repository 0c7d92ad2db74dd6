"""The scan engine's stages driven by hand, over data held in memory (imported by the test modules; not collected
itself): a whole file read at once, each distinct image checked, and samples scanned one by one counted and packed.
The engine itself only ever streams files through chunks (``qwenvl_train.data.engine.pipeline``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qwenvl_train.data.engine.chunks import Assembler, ChunkScan
from qwenvl_train.data.engine.columns import result_columns
from qwenvl_train.data.engine.records import FileRecords, sample_from_record
from qwenvl_train.data.engine.result import ScanResult
from qwenvl_train.data.engine.samples import SampleScan, check_image
from qwenvl_train.data.options import DataOptions
from qwenvl_train.format.sample import DataProblem, Sample


@dataclass
class FileContents:
    """What reading one file gave.

    Attributes:
        samples: one per record, structurally broken ones included (their ``errors`` say why).
        errors: problems that cost the whole file (unreadable, not JSON, no samples).
        notes: things worth saying that are not errors (a ``.jsonl`` file that holds a JSON list, ...).
    """

    samples: list[Sample] = field(default_factory=list)
    errors: list[DataProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_file(path: str | Path) -> FileContents:
    """Every record of one file, all at once (the scan reads :class:`FileRecords` incrementally)."""
    records = FileRecords(path)
    samples = [sample_from_record(record, records.file) for record in records]
    if records.errors:
        return FileContents([], records.errors, [])
    return FileContents(samples, [], records.notes)


def check_images(refs: Iterable[str], options: DataOptions) -> dict[str, str | None]:
    """Each distinct image checked once; ``ref -> None`` (fine) or the reason it is not."""
    return {ref: check_image(ref, options) for ref in dict.fromkeys(refs)}


def assemble(
    files: Sequence[str],
    file_errors: Sequence[DataProblem],
    notes: Sequence[str],
    samples: Sequence[SampleScan],
    image_status: Mapping[str, str | None],
    options: DataOptions,
    n_queries: int,
) -> ScanResult:
    """Count and pack samples held in memory, as the scan does chunk by chunk: image errors (``image_status``,
    from :func:`check_images`) joined to their samples, the kept samples packed (in memory)."""
    assembler = Assembler(files, options, n_queries, result_columns(None))
    for file, group in itertools.groupby(samples, key=lambda sample: sample.file):
        if file not in assembler.files:
            assembler.files.append(file)
        chunk = ChunkScan(assembler.files.index(file))
        for sample in group:
            chunk.add(sample, image_status.get)
        assembler.begin_file(chunk.file_index)
        assembler.add(chunk.finish())
        assembler.end_file([], [])
    assembler.file_errors += file_errors
    assembler.total.notes += notes
    return assembler.finish()
