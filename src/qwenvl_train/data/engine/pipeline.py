"""The scan over data files, and the processes it runs in: records read here, chunks scanned by worker processes,
merged here.

This process reads each file incrementally (:class:`~.records.FileRecords`: JSON Lines line by line, a JSON list
element by element), cuts the records into chunks of :data:`CHUNK_RECORDS`, and hands them to ``workers``
processes (forked, so they share the tokenizer already loaded) that decode, check, render and count them
(:class:`~.chunks.ChunkScanner`). Results come back in submission order and are merged by one
:class:`~.chunks.Assembler`, so the result is the same, in the same order, whatever the number of workers; a
window of chunks in flight bounds the memory. With one worker everything runs in this process, through the same
code. A large scan runs in a forked process of its own (:func:`run_forked`), so that the process that trains
keeps only the result.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from ...format.render import TextEncoder
from ..options import DataOptions
from . import streams
from .chunks import Assembler, ChunkJob, ChunkScan, ChunkScanner
from .columns import result_columns
from .records import FileRecords, Record
from .result import ScanResult

CHUNK_RECORDS = 256  # records per chunk: ~0.1 s of work, far above the cost of sending it to a worker
CHUNK_CHARS = 1 << 20  # ... or fewer, when records are long
MAX_DEFAULT_WORKERS = 8
IN_PROCESS_BELOW = (
    4 << 20
)  # bytes of data: less is scanned in this process (more: in a forked one, with workers)
PROGRESS_FROM = 8 << 20  # bytes of data: a progress bar from here on (on a terminal)

T = TypeVar("T")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def data_size(files: Sequence[str]) -> int:
    """Bytes in the data files that exist."""
    total = 0
    for file in files:
        try:
            total += os.stat(streams.source(file)).st_size
        except OSError:
            pass
    return total


def resolve_workers(requested: int | None, files: Sequence[str]) -> int:
    """``requested`` when given; else the available cores up to :data:`MAX_DEFAULT_WORKERS`, or 1 for data under
    :data:`IN_PROCESS_BELOW` bytes (starting processes would cost more than it saves)."""
    if requested:
        return requested
    if data_size(files) < IN_PROCESS_BELOW:
        return 1
    return min(available_cores(), MAX_DEFAULT_WORKERS)


class _Done:
    """A result computed in this process, looking like a finished ``Future``."""

    def __init__(self, value: ChunkScan) -> None:
        self.value = value

    def result(self) -> ChunkScan:
        return self.value


_worker_scanner: ChunkScanner | None = None


def _start_worker(tokenizer: TextEncoder, options: DataOptions, n_queries: int) -> None:
    global _worker_scanner
    _worker_scanner = ChunkScanner(tokenizer, options, n_queries)


def _scan_in_worker(job: ChunkJob) -> ChunkScan:
    assert _worker_scanner is not None
    return _worker_scanner(job)


@contextmanager
def _scanner(
    workers: int, tokenizer: TextEncoder, options: DataOptions, n_queries: int
) -> Iterator[Callable[[ChunkJob], Future[ChunkScan] | _Done]]:
    """``submit(job)`` for ``workers`` processes (this one when 1)."""
    if workers <= 1:
        scanner = ChunkScanner(tokenizer, options, n_queries)
        yield lambda job: _Done(scanner(job))
        return
    # fork shares the loaded tokenizer; spawn (where fork is missing) pickles it to each worker
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    gc.freeze()  # the workers' garbage collector leaves this process's objects alone, so their pages stay shared
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_start_worker,
        initargs=(tokenizer, options, n_queries),
    )
    try:
        yield partial(pool.submit, _scan_in_worker)
    except BrokenProcessPool as exc:
        raise RuntimeError(
            f"a scan worker process died ({exc}): out of memory? Try fewer --preprocessing_num_workers"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        gc.unfreeze()


def _jobs(records: FileRecords, file_index: int, file: str) -> Iterator[ChunkJob]:
    batch: list[Record] = []
    chars = 0
    for record in records:
        batch.append(record)
        chars += len(record.text)
        if len(batch) >= CHUNK_RECORDS or chars >= CHUNK_CHARS:
            yield ChunkJob.of(file_index, file, batch)
            batch, chars = [], 0
    if batch:
        yield ChunkJob.of(file_index, file, batch)


class _Progress:
    """A bar over the bytes of the data, with samples and samples/s."""

    def __init__(self, total: int, show: bool | None) -> None:
        if show is None:  # large inputs, on a terminal (tqdm's None)
            disable = None if total >= PROGRESS_FROM else True
        else:
            disable = not show
        self.bar = tqdm(
            total=total, desc="scanning data", unit="B", unit_scale=True, unit_divisor=1024, disable=disable
        )
        self.start = time.perf_counter()
        self.samples = 0

    def update(self, done_bytes: int, samples: int) -> None:
        self.samples += samples
        self.bar.update(done_bytes - self.bar.n)
        rate = self.samples / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.samples} samples, {rate:.0f} samples/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


def scan_files(
    files: Sequence[str],
    tokenizer: TextEncoder,
    options: DataOptions,
    n_queries: int,
    folder: Path | None,
    *,
    workers: int = 1,
    progress: bool | None = None,
    sync: bool = False,
) -> ScanResult:
    """Scan ``files`` with ``workers`` processes, writing the kept samples to columns in ``folder`` (None: in
    memory).

    Args:
        files: data files, in order.
        tokenizer, options, n_queries: what each sample is scanned with.
        folder: where the columns go (created).
        workers: processes scanning chunks (1: this one).
        progress: a progress bar (None: for inputs of :data:`PROGRESS_FROM` bytes or more, on a terminal).
        sync: flush the columns to the disk before returning.

    Returns:
        The result; its ``provenance`` is left to the caller.
    """
    assembler = Assembler(files, options, n_queries, result_columns(folder))
    progress_bar = _Progress(data_size(files), progress)
    window = 2 * max(workers, 1)  # chunks in flight: one running and one waiting per worker
    pending: deque[Any] = deque()
    read_before = 0  # bytes of the files already read whole

    def merge_until(left: int, done_bytes: int) -> None:
        while len(pending) > left:
            entry = pending.popleft()
            if callable(entry):  # a file begins or ends
                entry()
                continue
            chunk = entry.result()
            assembler.add(chunk)
            progress_bar.update(done_bytes, chunk.summary.samples_read)

    try:
        with _scanner(workers, tokenizer, options, n_queries) as submit:
            for file_index, file in enumerate(files):
                records = FileRecords(file)
                pending.append(partial(assembler.begin_file, file_index))
                for job in _jobs(records, file_index, file):
                    pending.append(submit(job))
                    merge_until(window, read_before + records.bytes_read)
                pending.append(partial(_end_file, assembler, records))
                read_before += data_size([file])
            merge_until(0, read_before)
    finally:
        progress_bar.close()
    return assembler.finish(folder, sync)


def _end_file(assembler: Assembler, records: FileRecords) -> None:
    assembler.end_file(records.errors, records.notes)


def runs_forked(files: Sequence[str]) -> bool:
    """A scan of ``files`` runs in a forked process (:func:`run_forked`): data of :data:`IN_PROCESS_BELOW` bytes
    or more, where processes can be forked."""
    return data_size(files) >= IN_PROCESS_BELOW and "fork" in multiprocessing.get_all_start_methods()


def run_forked(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in a forked process: its result (pickled) or its exception comes back.

    A large scan runs so, whatever the number of workers: the memory it takes while it runs (ids seen, images
    named, the allocator's fragments of a million small objects) goes with the process, and the process that
    trains keeps only what the result holds (memory maps and the counts).

    Raises:
        RuntimeError: the process died without an answer (killed for memory, ...).
    """
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def target() -> None:
        try:
            answer: tuple[bool, Any] = (True, function(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller, which raises it
            answer = (False, exc)
        send.send(answer)

    process = context.Process(target=target, name="qwenvl-scan")
    process.start()
    send.close()
    try:
        ok, value = receive.recv()
    except EOFError:
        process.join()
        raise RuntimeError(
            f"the scan process died (exit code {process.exitcode}): out of memory? Try fewer "
            "--preprocessing_num_workers"
        ) from None
    finally:
        receive.close()
    process.join()
    if not ok:
        raise value
    return value


def release_free_memory() -> None:
    """Hand the heap memory freed since the scan back to the operating system. The C library keeps freed pages
    for reuse otherwise, and the process that scanned would stay as large after the scan as at its peak."""
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc; elsewhere there is nothing to call
    except (OSError, AttributeError):
        pass
