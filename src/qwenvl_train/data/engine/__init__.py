"""The scan engine: data files -> the items training uses, every error, and the counts; done once and cached.

Training (``ConversationDataset``) and ``qwenvl-train check-data`` both call :func:`scan`; neither reads data
any other way, so check-data reports exactly what training will see. The scan is a pure function of the
files, the tokenizer, the image span length (``n_queries``) and the :class:`~..options.DataOptions`.

One sample's way through the engine:

1. :mod:`.reader`: the file's text, block by block; the sample's JSON value cut out as text with its line.
2. :mod:`.records`: that text is a :class:`~.records.Record` (text, line, position in the file); the records of a
   file are cut into chunks (:class:`~.chunks.ChunkJob`) and sent to a worker process (:mod:`.pipeline`).
3. In the worker, :func:`~.records.sample_from_record` decodes the record and checks its structure: a
   :class:`~qwenvl_train.format.sample.Sample` (turns with roles resolved, structural errors beside them).
4. :func:`~.samples.scan_sample` applies every rule, parses the markup, renders ids and the trained mask and truncates: a
   :class:`~.samples.SampleScan` (every problem, or the ids and the trained mask as arrays);
   :func:`~.samples.check_image` checks the images it names.
5. :class:`~.chunks.ChunkScan` counts it and, when it is kept, packs it with the chunk's other kept samples
   (:class:`~.columns.ItemsPart`), which travels back to this process.
6. :class:`~.chunks.Assembler` merges the chunks in input order and appends the kept samples to memory-mapped
   columns (:mod:`.columns`): the :class:`~.result.ScanResult`, which :mod:`.cache` keeps under a key of
   everything it depends on, for later runs, check-data and every rank (one process scans while the others wait).
7. Training reads the sample back from the columns as an :class:`~.columns.Item` (``input_ids``, the trained
   mask, whose ``labels`` are made there, images); ``data.dataset`` loads its images, the collator pads it into a batch.

A sample with any error is never kept; whether errors stop training or are skipped is the caller's choice
(``on_error``, applied by :meth:`~.result.ScanResult.raise_for_errors`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from ...format.render import TextEncoder
from ..options import DataOptions
from .cache import CacheKey, ScanCache, cache_root, scan_uncached
from .columns import Item, ScanItems
from .pipeline import release_free_memory, resolve_workers, run_forked, runs_forked, scan_files
from .result import ScanResult, ScanSummary
from .streams import take_streams

__all__ = ["Item", "ScanItems", "ScanResult", "ScanSummary", "scan"]

logger = logging.getLogger(__name__)


def scan(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    tokenizer: TextEncoder,
    options: DataOptions | None = None,
    *,
    n_queries: int = 256,
    progress: bool | None = None,
) -> ScanResult:
    """Read, check, render and truncate every sample of ``paths`` and check their images; or read the result
    of the same scan from the cache (``options.data_cache``).

    Args:
        paths: data files (``.json`` / ``.jsonl``, gzipped too), concatenated in order; ``-`` or ``/dev/stdin``
            reads JSON Lines from the standard input (once).
        tokenizer: a ``QwenVLTokenizer`` (anything with ``encode_text``; without a ``vocab_file`` to
            fingerprint, the result is not cached).
        options: the data options (defaults when None); ``on_error`` is not applied here.
        n_queries: positions per image span (``vision_settings(model).n_queries``).
        progress: show a progress bar (None: for large inputs on a terminal).

    Returns:
        The kept items (memory-mapped), every error, the counts; ``provenance`` says who scanned and where the
        result is kept.
    """
    options = options or DataOptions()
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = take_streams([str(Path(p)) for p in paths])  # the standard input read once, named <stdin>
    workers = resolve_workers(options.preprocessing_num_workers, files)

    def scanner(folder: Path, sync: bool) -> ScanResult:
        run = partial(
            scan_files, files, tokenizer, options, n_queries, folder, workers=workers, progress=progress
        )
        if runs_forked(files):
            return run_forked(run, sync=sync)  # what the scan takes while it runs leaves with its process
        result = run(sync=sync)
        release_free_memory()
        return result

    root = cache_root(options.data_cache)
    if root is None:
        return scan_uncached(scanner, "--data_cache off")
    key = CacheKey.of(files, tokenizer, options, n_queries)
    if key is None:
        return scan_uncached(
            scanner, f"the tokenizer {type(tokenizer).__name__} has no vocab_file to fingerprint"
        )
    try:
        result = ScanCache(root).get(key, options, scanner)
    except OSError as exc:
        if exc.filename is None or not str(exc.filename).startswith(str(root)):
            raise
        logger.warning("scan cache %s cannot be used (%s): scanning without it", root, exc)
        return scan_uncached(scanner, f"{root}: {exc.strerror}")
    logger.info("%s", result.provenance)
    return result
