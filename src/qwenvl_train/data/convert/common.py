"""What every importer shares: the records it reads, the images it names or writes, the problems, the writer.

An importer (one module per source format) gives :class:`SourceRecord` s, one per record of its source (with the
line or index that names it), and turns each into output samples with its ``convert(item, job)``; a record it cannot
convert raises :class:`RecordError` (one line). :func:`run_conversion` drives them: under ``on_error="raise"`` the
first problem ends the command and nothing is written (to a file: a stream has had the samples before it); under ``"skip"`` the record is left out, printed and
counted. The output is JSON Lines with sorted keys in input order, so the same input gives the same bytes.

Images: a path in a record is resolved against the image root (``--image-root``, else the source file's folder),
its header is read (it must be an image: check-data would refuse it later anyway) and it is written relative to
the output file's folder, which is where check-data and training resolve it from. Image bytes carried in the
data (parquet) are written once under ``--images-out`` as ``<sha256>.<format>``. An http(s) URL is written as
it is, and fetched (into the image loader's cache) only when a box needs its size. Sizes always come from the
image's header (:meth:`Conversion.size`), never from an assumption.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TextIO

from ...errors import UserError
from ...format.boxes import BoxError, BoxKind, to_qwen_box
from ...format.markup import MarkupError, image_markup
from ...format.sample import DataProblem
from ...outputs import open_output, output_target, write_output

OnError = Literal["raise", "skip"]
IMAGE_PLACEHOLDER = "<image>"  # LLaVA's, LLaMA-Factory's and ms-swift's image placeholder


class ConvertError(UserError, ValueError):
    """The conversion stops: a problem under ``--on-error raise``, a bad option, or an unreadable source."""


class RecordError(Exception):
    """One record cannot be converted; ``kind`` is a short label the summary counts by, the message one line."""

    def __init__(self, message: str, kind: str = "bad record") -> None:
        super().__init__(message)
        self.kind = kind


class SourceError(Exception):
    """A source file cannot be read on (missing, bad JSON...): what was read of it stands; ``line`` if known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class SourceRecord(NamedTuple):
    """One record of a source file: what it holds (a :class:`RecordError` when it could not even be decoded), the
    1-based line where it starts (None when not known), its 0-based position, and its own id when it has one."""

    value: Any
    line: int | None
    index: int
    id: str | None = None

    @property
    def name(self) -> str:
        """How messages name the record: its id, else ``#index``."""
        return self.id if self.id is not None else f"#{self.index}"


def type_name(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if value is None:
        return "null"
    return {
        dict: "object",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
    }.get(type(value), type(value).__name__)


def record_id(value: Any) -> str | None:
    """A record's ``id`` when it has a usable one (a string or an integer)."""
    raw = value.get("id") if isinstance(value, dict) else None
    return str(raw) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else None


def json_items(source: Path) -> Iterator[SourceRecord]:
    """The records of a JSON list or JSON Lines file, read piece by piece (the scan engine's reader).

    Raises:
        SourceError: the file is missing, not UTF-8, or not JSON where the next record should be.
    """
    from ..engine.records import FileRecords

    records = FileRecords(source)
    for record in records:
        try:
            value = json.loads(record.text)
        except json.JSONDecodeError as exc:  # a JSON Lines line that is not JSON
            yield SourceRecord(
                RecordError(f"bad JSON: {exc.msg} at column {exc.colno}", "bad JSON"),
                record.line,
                record.index,
            )
            continue
        yield SourceRecord(value, record.line, record.index, record_id(value))
    for problem in records.errors:
        raise SourceError(problem.reason, problem.line)


def load_json(source: Path) -> Any:
    """A whole JSON document (COCO instances, dataset_info.json): read at once.

    Raises:
        SourceError: missing, unreadable or not JSON.
    """
    try:
        with open(source, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise SourceError("no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"bad JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", exc.lineno
        ) from None


def require(value: Any, key: str, expected: type | tuple[type, ...], what: str | None = None) -> Any:
    """``value[key]``, which must be of the ``expected`` type(s); a :class:`RecordError` otherwise."""
    what = what or repr(key)
    if not isinstance(value, dict):
        raise RecordError(f"record is a {type_name(value)}, expected an object", "bad structure")
    if key not in value:
        keys = ", ".join(repr(k) for k in list(value)[:6]) or "none"
        raise RecordError(f"missing key {what} (keys: {keys})", "bad structure")
    found = value[key]
    if not isinstance(found, expected) or isinstance(found, bool):
        names = " or ".join(
            type_name(t()) for t in (expected if isinstance(expected, tuple) else (expected,))
        )
        raise RecordError(f"{what} is a {type_name(found)}, expected {names}", "bad structure")
    return found


def no_other_media(value: Any, keys: Sequence[str] = ("videos", "audios")) -> None:
    """Qwen-VL takes pictures only: a record carrying videos or audio is an error, not dropped quietly."""
    for key in keys:
        if isinstance(value, dict) and value.get(key):
            raise RecordError(f"{key!r}: Qwen-VL takes pictures only", "videos or audio")


def turn(role: str, value: str, trained: bool = True) -> dict[str, Any]:
    """One turn of the output's ``conversations``; an assistant turn kept as context only (``trained`` False) is
    written with ``"train": false``."""
    out: dict[str, Any] = {"from": role, "value": value}
    if not trained:
        out["train"] = False
    return out


def sample(sample_id: str, turns: list[dict[str, Any]]) -> dict[str, Any]:
    """One output sample (the original conversations format)."""
    return {"id": sample_id, "conversations": turns}


@dataclass
class Stats:
    """What a conversion did, for its summary."""

    read: int = 0
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    images_written: int = 0
    files: int = 0
    left_out: Counter[str] = field(default_factory=Counter)

    def summary(self, out: Path, images_out: Path | None) -> str:
        skipped = sum(self.skipped.values())
        text = (
            f"read {self.read} record(s) from {self.files} file(s); wrote {self.written} sample(s) to {out}"
        )
        if skipped:
            reasons = ", ".join(f"{n} {kind}" for kind, n in sorted(self.skipped.items()))
            text += f"; skipped {skipped} ({reasons})"
        else:
            text += "; skipped 0"
        if self.left_out:
            text += "; left out " + ", ".join(f"{n} {why}" for why, n in sorted(self.left_out.items()))
        if images_out is not None:
            text += f"; wrote {self.images_written} new image(s) to {images_out}"
        return text


class Conversion:
    """One conversion: its options, its image bookkeeping and its counts.

    Attributes:
        out: the output file (``-``, a device or a FIFO: a stream); image paths are written relative to its
            folder (to the working folder for a stream).
        image_root: where relative image paths of the data are resolved (None: each source file's folder).
        images_out: where image bytes carried in the data are written.
        options: the importer's own options (``--question``, ``--instances``...).
    """

    def __init__(
        self,
        out: Path,
        *,
        image_root: Path | None = None,
        images_out: Path | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.out = Path(out)
        self.folder = self.out.parent if output_target(self.out, "--out") == "file" else Path()
        self.image_root = image_root
        self.images_out = images_out
        self.options = options or {}
        self.stats = Stats()
        self.source: Path = Path()
        self._sizes: dict[str, tuple[int, int] | None] = {}
        self._bad: dict[str, str] = {}
        self._hashes: set[str] = set()

    # Images named by path ------------------------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """An image reference of the data, resolved: a URL as is, a path against the image root."""
        from ..images import is_url

        if not isinstance(ref, str) or not ref.strip():
            raise RecordError(f"image {ref!r} is not a path", "bad image")
        if is_url(ref):
            return ref
        root = self.image_root if self.image_root is not None else self.source.parent
        path = os.path.expanduser(ref)
        return os.path.abspath(path if os.path.isabs(path) else os.path.join(root, path))

    def image(self, ref: str) -> str:
        """The path to write for the image ``ref`` names: relative to the output's folder (URLs as they are).
        A local image's header is read (cached).

        Raises:
            RecordError: missing, not an image, too large.
        """
        from ..images import is_url

        resolved = self.resolve(ref)
        if is_url(resolved):
            return resolved
        self._header(resolved)
        return os.path.relpath(resolved, os.path.abspath(self.folder))

    def size(self, ref: str) -> tuple[int, int]:
        """``(width, height)`` of the image ``ref`` names, from its header (a URL is fetched, into the cache).

        Raises:
            RecordError: the image cannot be opened.
        """
        resolved = self.resolve(ref)
        size = self._header(resolved)
        if size is None:  # a URL
            from ..errors import ImageError
            from ..images import open_image

            try:
                with open_image(resolved) as image:
                    size = self._sizes[resolved] = image.size
            except ImageError as exc:
                raise RecordError(f"image {exc}", "bad image") from None
        return size

    def _header(self, resolved: str) -> tuple[int, int] | None:
        """The size in a local image's header (None for a URL), read once; a bad image stays bad."""
        if resolved in self._bad:
            raise RecordError(self._bad[resolved], "bad image")
        if resolved not in self._sizes:
            from ..errors import ImageError
            from ..images import check_image_header

            try:
                self._sizes[resolved] = check_image_header(resolved)
            except ImageError as exc:
                self._bad[resolved] = f"image {exc}"
                raise RecordError(self._bad[resolved], "bad image") from None
        return self._sizes[resolved]

    # Images carried as bytes ---------------------------------------------------------------------------------

    def image_bytes(self, data: bytes) -> tuple[str, tuple[int, int]]:
        """Write ``data`` once under ``--images-out`` as ``<sha256>.<format>``; its written path and size.

        Raises:
            RecordError: not an image Pillow reads.
        """
        from PIL import Image, UnidentifiedImageError

        if self.images_out is None:
            raise ConvertError("this data carries image bytes: give --images-out DIR to write them to")
        digest = hashlib.sha256(data).hexdigest()
        try:
            with Image.open(io.BytesIO(data)) as image:
                size, fmt = image.size, (image.format or "bin").lower()
        except UnidentifiedImageError:
            raise RecordError(
                f"image bytes (sha256 {digest[:12]}) are not a recognised image", "bad image"
            ) from None
        except (OSError, ValueError) as exc:
            raise RecordError(
                f"image bytes (sha256 {digest[:12]}) cannot be read ({exc})", "bad image"
            ) from None
        ext = {"jpeg": "jpg"}.get(fmt, fmt)
        path = self.images_out / f"{digest}.{ext}"
        if digest not in self._hashes:
            self._hashes.add(digest)
            if not path.exists():
                write_output(path, data, "--images-out")
                self.stats.images_written += 1
        return os.path.relpath(os.path.abspath(path), os.path.abspath(self.folder)), size

    # Boxes ---------------------------------------------------------------------------------------------------

    def qwen_box(self, box: Any, kind: BoxKind, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """:func:`~qwenvl_train.format.boxes.to_qwen_box` with its error as a :class:`RecordError`."""
        try:
            return to_qwen_box(box, kind, *size)
        except BoxError as exc:
            raise RecordError(str(exc), "bad box") from None


def fill_images(value: str, paths: Sequence[str], first: int, placeholder: str = IMAGE_PLACEHOLDER) -> str:
    """``value`` with its ``placeholder`` s replaced, in order, by ``Picture N: <img>path</img>\\n`` (N from
    ``first``); a line break right after a placeholder is taken into the picture's own."""
    pieces = value.split(placeholder)
    out = pieces[0]
    for n, (path, piece) in enumerate(zip(paths, pieces[1:], strict=True)):
        out += markup(image_markup, first + n, path) + (piece[1:] if piece.startswith("\n") else piece)
    return out


def markup(writer: Callable[..., str], *args: Any) -> str:
    """A markup writer's text, its error as a :class:`RecordError`."""
    try:
        return writer(*args)
    except MarkupError as exc:
        raise RecordError(str(exc), "bad markup") from None


Importer = tuple[
    Callable[[Path, Conversion], Iterable[SourceRecord]],
    Callable[[SourceRecord, Conversion], list[dict[str, Any]]],
]


def run_conversion(
    importer: Importer,
    sources: Sequence[Path],
    job: Conversion,
    on_error: OnError = "raise",
    err: TextIO | None = None,
) -> Stats:
    """Convert every record of ``sources`` and write the samples to ``job.out`` (see the module docstring).

    Raises:
        ConvertError: the first problem under ``on_error="raise"`` (nothing is written then).
    """
    err = err or sys.stderr
    items, convert = importer
    stats = job.stats

    def problem(source: Path, reason: str, kind: str, line: int | None, name: str | None) -> None:
        line_text = str(DataProblem(str(source), reason, name, None, line))
        if on_error == "raise":
            hint = " (--on-error skip leaves such records out)" if kind != "unreadable source" else ""
            raise ConvertError(line_text + hint)
        stats.skipped[kind] += 1
        print(f"skipped: {line_text}", file=err)

    with open_output(job.out, "--out") as fh:  # atomic for a file; a stream (- or /dev/stdout) in place
        for source in sources:
            job.source = Path(source)
            stats.files += 1
            try:
                for item in items(job.source, job):
                    stats.read += 1
                    try:
                        if isinstance(item.value, RecordError):
                            raise item.value
                        samples = convert(item, job)
                    except RecordError as exc:
                        problem(job.source, str(exc), exc.kind, item.line, item.name)
                        continue
                    except ConvertError as exc:  # stops the run whatever --on-error says: name the record
                        where = DataProblem(str(job.source), str(exc), item.name, None, item.line)
                        raise ConvertError(str(where)) from None
                    for s in samples:
                        fh.write(json.dumps(s, ensure_ascii=False, sort_keys=True) + "\n")
                    stats.written += len(samples)
            except SourceError as exc:
                problem(job.source, str(exc), "unreadable source", exc.line, None)
    return stats
