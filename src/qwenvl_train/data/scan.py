"""The one scan: data files -> the items training uses, every error, and the counts; done once and cached.

Training (``ConversationDataset``) and ``qwenvl-train check-data`` both call :func:`scan`; neither reads data
any other way, so check-data reports exactly what training will see. The scan is a pure function of the
files, the tokenizer, the image span length (``n_queries``) and the :class:`DataOptions`:

- :mod:`.stages`: the stages, each callable on its own: records (:mod:`.sources`), one sample
  (:func:`scan_sample`), images (:func:`check_images`), counting and packing (:func:`assemble`).
- :mod:`.pipeline`: the stages over files: read incrementally, chunks scanned by ``--preprocessing_num_workers``
  processes, merged in input order (the same result whatever the number); a large scan runs in a forked process,
  so that the process that trains keeps only the result.
- :mod:`.items` / :mod:`.result`: the kept samples as memory-mapped columns (ids int32, a trained mask), and
  the counts and errors beside them.
- :mod:`.cache`: the result kept under a key of everything it depends on, read back by later runs, check-data
  and every rank; one process scans while the others wait.

A sample with any error is never kept; whether errors stop training or are skipped is the caller's choice
(``on_error``, applied by :meth:`ScanResult.raise_for_errors`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from .cache import CacheKey, ScanCache, cache_root, scan_uncached
from .chat import TextEncoder
from .errors import NoSamplesError
from .items import Item, ScanItems
from .options import DataOptions
from .pipeline import release_free_memory, resolve_workers, run_forked, runs_forked, scan_files
from .result import ScanResult, ScanSummary
from .stages import SampleScan, assemble, check_image, check_images, scan_sample

__all__ = [
    "Item",
    "NoSamplesError",
    "SampleScan",
    "ScanItems",
    "ScanResult",
    "ScanSummary",
    "assemble",
    "check_image",
    "check_images",
    "scan",
    "scan_sample",
]

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
        paths: data files (``.json`` / ``.jsonl``), concatenated in order.
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
    files = [str(Path(p)) for p in paths]
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
