"""The scan cache: a scan is done once and its result read back by later runs, check-data and every rank.

Where: ``--data_cache`` (``auto``: ``$QWENVL_TRAIN_SCAN_CACHE``, else ``scans/`` in the project's cache folder,
``~/.cache/qwenvl-train`` or ``$QWENVL_TRAIN_CACHE``; a folder; or ``off``). Each entry is a folder named by the
key and the image check it was made with, holding the item columns (:mod:`.columns`), the lengths before
truncation, ``errors.jsonl`` and ``scan.json`` (counts, notes, examples, who scanned and when).

The key covers everything the result depends on: each data file (the path as given and absolute; size,
modification time and inode; its content's sha256 up to :data:`HASHED_WHOLE` bytes, sampled blocks beyond), the
tokenizer (class, source, vocabulary file's sha256, and the ids of a probe text), ``n_queries``, every data option
that changes the result (all but ``on_error``, the number of workers and the cache itself), and the source of the
scan's code. A change to any of them is a new key: a stale result is never read.

Images are checked when scanned, not when a result is read back: a result is reused only while every local image
it found bad still fails (fixing an image makes the next run scan again), and an image deleted after the scan is
found when training loads it (``on_error`` decides). A result made with a stronger image check (``full`` >
``header`` > ``none``) serves a weaker one when it found no image error, so training reuses what check-data found.

Concurrency: the process that misses takes a lock (``flock`` on ``<entry>.lock``) and scans into a hidden
temporary folder, then renames it into place (atomic: a killed scan never leaves a complete-looking entry);
processes that miss meanwhile wait on the lock and read the entry when it appears. Under torchrun every rank of a
machine shares the cache folder, so one process per machine scans; on shared storage whose locks work across
machines (NFSv4, Lustre with ``flock``), one process overall. Where locks do not work, each machine scans and the
first rename wins. Entries for the same data files with another content are deleted when a new one is written, as
are entries unused for :data:`UNUSED_DAYS` days and temporary folders left by killed scans.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from ...format import tokens as st
from ...format.render import TextEncoder
from ..filekinds import special_kind
from ..images import is_url
from ..options import RUN_ONLY, DataOptions
from . import streams
from .result import META_FILE, ScanResult
from .samples import check_image

logger = logging.getLogger(__name__)

FORMAT = 1  # of the entries; a change makes every older entry a miss
ENV = "QWENVL_TRAIN_SCAN_CACHE"
HASHED_WHOLE = 64 << 20  # data files up to this size are hashed whole; larger ones by sampled blocks
SAMPLED_BLOCKS = 64
SAMPLE_BLOCK = 64 << 10
UNUSED_DAYS = 30
TEMPORARY_DAYS = 1
VERIFY_ORDER = ("none", "header", "full")  # weakest first
KEY_FILE = "key.json"
USED_FILE = "used"
PROBE = f"Hello, world! 你好 e\u0301 {st.IM_START}user\n<img>a.png</img><ref>x</ref><box>(1,2),(3,4)</box> 12345\t\n"
#: The modules whose source the scan's result depends on (names under ``qwenvl_train``): the engine, the format
#: it renders, the image checks and the options.
SCAN_MODULES = (
    "data.engine", "data.engine.cache", "data.engine.chunks", "data.engine.columns", "data.engine.pipeline",
    "data.engine.reader", "data.engine.records", "data.engine.result", "data.engine.samples", "data.engine.streams",
    "data.errors", "data.filekinds", "data.images", "data.options",
    "format", "format.markup", "format.render", "format.rules", "format.sample", "format.tokens",
)  # fmt: skip

Scanner = Callable[[Path, bool], ScanResult]  # (folder, sync) -> the result with its columns in folder


def cache_root(setting: str) -> Path | None:
    """The cache folder for a ``--data_cache`` setting; None for ``off``."""
    if setting.lower() in ("off", "none", "false", "no", ""):
        return None
    if setting == "auto":
        from ...vocab import cache_dir

        return Path(os.environ.get(ENV) or cache_dir() / "scans")
    return Path(setting).expanduser()


def describe_process() -> str:
    """``rank R (pid P on HOST)`` under torchrun, ``pid P on HOST`` otherwise."""
    where = f"pid {os.getpid()} on {socket.gethostname()}"
    rank = os.environ.get("RANK")
    return f"rank {rank} ({where})" if rank is not None else where


def _sha256_file(path: str, size: int) -> str:
    """sha256 of the whole file, or of its size and :data:`SAMPLED_BLOCKS` blocks spread over it when large."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= HASHED_WHOLE:
            while block := fh.read(1 << 20):
                digest.update(block)
        else:
            digest.update(str(size).encode())
            for i in range(SAMPLED_BLOCKS):
                fh.seek((size - SAMPLE_BLOCK) * i // (SAMPLED_BLOCKS - 1))
                digest.update(fh.read(SAMPLE_BLOCK))
    return digest.hexdigest()


def file_fingerprint(path: str) -> dict[str, Any]:
    """What identifies a data file's content, cheaply (see the module docstring). The standard input is known by
    the content it was read with; a file that is not a regular file is never opened (a FIFO would be drained or
    block, a device never ends): its kind stands for its content, and the scan refuses it."""
    stream = streams.fingerprint(path)
    if stream is not None:
        return stream
    out: dict[str, Any] = {"path": path, "abspath": os.path.abspath(path)}
    try:
        st = os.stat(path)
    except OSError as exc:
        return {**out, "missing": exc.strerror}
    out.update(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, dir=os.path.isdir(path))
    kind = special_kind(st.st_mode)
    if kind is not None:
        out["special"] = kind
    elif not out["dir"]:
        try:
            out["sha256"] = _sha256_file(path, st.st_size)
        except OSError as exc:
            out["unreadable"] = exc.strerror
    return out


@cache
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    return _sha256_file(path, size)


def _source_digest(path: str | None) -> str:
    if not path or not os.path.isfile(path):
        return ""
    st = os.stat(path)
    return _digest_of(path, st.st_size, st.st_mtime_ns)


@cache
def code_fingerprint() -> str:
    """sha256 of the source of the scan's modules (a change to the code is a new key)."""
    digest = hashlib.sha256(str(FORMAT).encode())
    for name in SCAN_MODULES:
        spec = importlib.util.find_spec(f"qwenvl_train.{name}")
        if spec is None or spec.origin is None:  # a module moved: its code would silently stop counting
            raise RuntimeError(f"SCAN_MODULES names qwenvl_train.{name}, which does not exist")
        digest.update(_source_digest(spec.origin).encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: TextEncoder) -> str | None:
    """The tokenizer's class and source, its vocabulary file's sha256 and the ids of a probe text; None when it
    has no vocabulary file to hash (such a tokenizer's scans are not cached)."""
    vocab = getattr(tokenizer, "vocab_file", None)
    if not isinstance(vocab, str) or not os.path.isfile(vocab):
        return None
    cls = type(tokenizer)
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:
        source = None
    parts = [f"{cls.__module__}.{cls.__qualname__}", _source_digest(source), _source_digest(vocab)]
    parts.append(json.dumps(tokenizer.encode_text(PROBE)))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """What a scan's result depends on; ``digest`` names its entries."""

    inputs: dict[str, Any]
    digest: str

    @classmethod
    def of(
        cls, files: Sequence[str], tokenizer: TextEncoder, options: DataOptions, n_queries: int
    ) -> CacheKey | None:
        """The key, or None when the tokenizer cannot be fingerprinted."""
        tokenizer_print = tokenizer_fingerprint(tokenizer)
        if tokenizer_print is None:
            return None
        skip = {*RUN_ONLY, "verify_images"}  # the image check names the entry instead (see reuse)
        inputs = {
            "format": FORMAT,
            "code": code_fingerprint(),
            "tokenizer": tokenizer_print,
            "n_queries": n_queries,
            "options": {f.name: getattr(options, f.name) for f in fields(DataOptions) if f.name not in skip},
            "files": [file_fingerprint(file) for file in files],
        }
        digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]
        return cls(inputs, digest)

    def entry(self, verify_images: str) -> str:
        return f"{self.digest}-{verify_images}"

    def files_unchanged(self) -> bool:
        """The data files are as they were when the key was made."""
        return [file_fingerprint(f["path"]) for f in self.inputs["files"]] == self.inputs["files"]


def _content(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A file fingerprint without the path as written (the same file may be named relative or absolute)."""
    return {k: v for k, v in fingerprint.items() if k != "path"}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(folder: Path) -> None:
    """Delete an entry: renamed away first, so that nobody finds it half deleted."""
    trash = folder.with_name(f".tmp-removed-{folder.name}-{secrets.token_hex(4)}")
    with contextlib.suppress(OSError):
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def _remove_temporary(folder: Path, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked DataLoader worker
        shutil.rmtree(folder, ignore_errors=True)


def scan_uncached(scanner: Scanner, reason: str) -> ScanResult:
    """Scan into a temporary folder, deleted when the result's items are (``reason``: why not cached)."""
    folder = Path(tempfile.mkdtemp(prefix="qwenvl-scan-"))
    start = time.perf_counter()
    try:
        result = scanner(folder, False)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(result.items, _remove_temporary, folder, os.getpid())
    result.provenance = _scanned(result, time.perf_counter() - start) + f"; not cached ({reason})"
    return result


def _scanned(result: ScanResult, seconds: float) -> str:
    n = result.summary.samples_read
    rate = f", {n / seconds:.0f} samples/s" if seconds > 0 else ""
    return f"{describe_process()} scanned {n} samples in {seconds:.1f} s{rate}"


class ScanCache:
    """The entries under one cache folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, key: CacheKey, options: DataOptions, scanner: Scanner) -> ScanResult:
        """The cached result for ``key`` and ``options``, or a new scan by ``scanner`` (written to the cache).
        Waits while another process scans the same entry.

        Raises:
            OSError: the cache folder cannot be written.
        """
        found = self._reuse(key, options)
        if found is not None:
            return found
        self.root.mkdir(parents=True, exist_ok=True)
        name = key.entry(options.verify_images)
        with self._lock(name):
            found = self._reuse(key, options, stale_ok=False)
            if found is not None:
                return found
            return self._scan(key, name, options, scanner)

    def _reuse(self, key: CacheKey, options: DataOptions, stale_ok: bool = True) -> ScanResult | None:
        """An entry usable for ``options``: made with the same image check, or a stronger one that found no
        image error; None when there is none. Without ``stale_ok`` (holding the lock), an unusable entry under
        the name about to be written is removed."""
        wanted = VERIFY_ORDER.index(options.verify_images)
        for level in VERIFY_ORDER[wanted:]:
            folder = self.root / key.entry(level)
            if not (folder / META_FILE).exists():
                continue
            result, meta, problem = self._open(folder, key, options)
            if result is not None and level != options.verify_images and result.summary.image_errors:
                continue  # a weaker check might not have found those errors
            if problem is not None:
                logger.info("scan cache entry %s: %s: scanning again", folder, problem)
                if not stale_ok and level == options.verify_images:
                    _remove(folder)
                continue
            assert result is not None
            with contextlib.suppress(OSError):
                (folder / USED_FILE).touch()
            result.provenance = (
                f"{describe_process()} read the scan from {folder} (scanned by {meta['scanned_by']} in "
                f"{meta['seconds']:.1f} s, {meta['created']})"
            )
            return result
        return None

    def _open(
        self, folder: Path, key: CacheKey, options: DataOptions
    ) -> tuple[ScanResult | None, dict[str, Any], str | None]:
        """The entry in ``folder`` and its ``scan.json``, and why it cannot be used (None when it can)."""
        try:
            result, meta = ScanResult.load(folder, options)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return None, {}, f"unreadable ({exc})"
        if meta.get("format") != FORMAT or meta.get("key") != key.inputs:
            return None, meta, "made for other inputs (a hash collision?)"
        fixed = self._fixed_image(result, options)
        if fixed is not None:
            return result, meta, f"image {fixed} was bad and is fine now"
        return result, meta, None

    @staticmethod
    def _fixed_image(result: ScanResult, options: DataOptions) -> str | None:
        """A local image the scan refused that passes the check now (URLs are not fetched again here)."""
        for ref in result.bad_images:
            if not is_url(ref) and check_image(ref, options) is None:
                return ref
        return None

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """Hold ``<name>.lock`` (an exclusive ``flock``; nothing when the file system has no locks)."""
        try:
            import fcntl
        except ImportError:  # not on a POSIX system: scanning twice is the worst that can happen
            yield
            return
        fd = os.open(self.root / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                logger.info("%s: waiting for %s, scanning into %s", describe_process(), holder, self.root)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, describe_process().encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _scan(self, key: CacheKey, name: str, options: DataOptions, scanner: Scanner) -> ScanResult:
        """Scan into a temporary folder, then rename it into place and read it back from there."""
        temporary = self.root / f".tmp-{name}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        start = time.perf_counter()
        try:
            result = scanner(temporary, True)
            seconds = time.perf_counter() - start
            if not key.files_unchanged():
                logger.warning("the data files changed during the scan: its result is used but not cached")
                weakref.finalize(result.items, _remove_temporary, temporary, os.getpid())
                result.provenance = (
                    _scanned(result, seconds) + "; not cached (the data changed during the scan)"
                )
                return result
            (temporary / KEY_FILE).write_text(json.dumps(key.inputs), encoding="utf-8")
            info = {
                "format": FORMAT,
                "key": key.inputs,
                "verify_images": options.verify_images,
                "scanned_by": describe_process(),
                "seconds": seconds,
                "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            }
            result.save(info)
            for file in temporary.iterdir():
                _fsync(file)
            _fsync(temporary)
            final = self.root / name
            try:
                temporary.rename(final)
            except OSError:  # another machine renamed first, without a working lock: use theirs
                shutil.rmtree(temporary, ignore_errors=True)
            _fsync(self.root)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        loaded, _ = ScanResult.load(final, options)
        loaded.provenance = _scanned(result, seconds) + f"; cached in {final}"
        self._prune(key)
        return loaded

    def _prune(self, key: CacheKey) -> None:
        """Delete entries of the same data files with other content, entries unused for :data:`UNUSED_DAYS`
        days, and temporary folders older than :data:`TEMPORARY_DAYS` (left by killed scans)."""
        now = time.time()
        ours = [_content(f) for f in key.inputs["files"]]
        for folder in self.root.iterdir():
            with contextlib.suppress(OSError, ValueError, KeyError):
                if folder.name.startswith(".tmp-"):
                    if now - folder.stat().st_mtime > TEMPORARY_DAYS * 86400:
                        shutil.rmtree(folder, ignore_errors=True)
                    continue
                if not folder.is_dir() or folder.name.startswith(key.digest):
                    continue
                used = folder / USED_FILE
                last = used.stat().st_mtime if used.exists() else folder.stat().st_mtime
                theirs = [
                    _content(f) for f in json.loads((folder / KEY_FILE).read_text(encoding="utf-8"))["files"]
                ]
                same_files = [f["abspath"] for f in theirs] == [f["abspath"] for f in ours]
                if same_files and theirs != ours or now - last > UNUSED_DAYS * 86400:
                    logger.info("scan cache: removing %s", folder)
                    _remove(folder)
                    with contextlib.suppress(OSError):
                        (self.root / f"{folder.name}.lock").unlink()
