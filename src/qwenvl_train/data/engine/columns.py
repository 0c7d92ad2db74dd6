"""The scan's column store: the kept samples as flat columns, written chunk after chunk and read through memory
maps (the counts and errors beside them, and saving and loading the whole: :mod:`.result`).

The scan appends each chunk of kept samples to the columns (:class:`ItemsWriter` over :class:`Columns`), so no
process holds the samples as Python objects; training reads them from memory maps (:class:`ScanItems`), whose
pages the operating system loads on demand, drops under pressure and shares between the processes of a
machine. Resident memory therefore does not grow with the dataset.

Columns (one raw little-endian file ``<name>.bin`` each; their lengths are kept by the scan's ``scan.json``):

- ``input_ids`` int32: every kept sample's ids, one after another; ``trained`` bool, same length: the token
  is trained (labels are the ids there and ``IGNORE_INDEX`` elsewhere, so labels are not stored).
- ``offsets`` int64, ``n + 1``: sample ``i`` owns tokens ``offsets[i]:offsets[i + 1]``; ``item_lengths`` int64:
  the difference, kept for samplers.
- ``file_index`` int32: the data file each sample came from; ``lines`` int32: the 1-based line where it
  starts (0 when unknown).
- ``id_bytes`` / ``id_offsets``: the sample ids, UTF-8.
- ``image_bytes`` / ``image_ref_offsets``: the resolved image references of all samples in order, UTF-8;
  ``image_turns`` int32: the turn naming each; ``image_offsets`` int64, ``n + 1``: sample ``i`` owns images
  ``image_offsets[i]:image_offsets[i + 1]``.
- ``lengths`` int64 (beside the items): the tokens of every sample without error, before truncation.

Beside the columns, ``scan.json`` holds the counts, notes, examples and column lengths, and ``errors.jsonl`` every
error, one per line (:mod:`.result`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, overload

import numpy as np

from ...format.render import IGNORE_INDEX

LENGTHS_COLUMN = {"lengths": np.dtype("<i8")}
ITEM_COLUMNS: dict[str, np.dtype] = {
    "input_ids": np.dtype("<i4"),
    "trained": np.dtype(np.bool_),
    "offsets": np.dtype("<i8"),
    "item_lengths": np.dtype("<i8"),
    "file_index": np.dtype("<i4"),
    "lines": np.dtype("<i4"),
    "id_bytes": np.dtype(np.uint8),
    "id_offsets": np.dtype("<i8"),
    "image_bytes": np.dtype(np.uint8),
    "image_ref_offsets": np.dtype("<i8"),
    "image_turns": np.dtype("<i4"),
    "image_offsets": np.dtype("<i8"),
}


class Columns:
    """Append-only typed columns, each a raw file ``<name>.bin`` in ``folder`` (or a buffer in memory when
    ``folder`` is None), with marks to go back to.

    Args:
        folder: where the files go (created); None keeps the columns in memory.
        dtypes: the columns and their element types.
    """

    def __init__(self, folder: Path | None, dtypes: Mapping[str, np.dtype]) -> None:
        self.folder = folder
        self.dtypes = {name: np.dtype(dtype) for name, dtype in dtypes.items()}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, BinaryIO] = {
            name: open(folder / f"{name}.bin", "wb") if folder is not None else io.BytesIO()  # noqa: SIM115
            for name in self.dtypes
        }
        self.lengths = dict.fromkeys(self.dtypes, 0)

    def append(self, name: str, values: Any) -> None:
        """Append ``values`` (anything ``np.asarray`` takes) to column ``name``."""
        array = np.asarray(values, dtype=self.dtypes[name])
        self.files[name].write(array.tobytes())
        self.lengths[name] += array.size

    def mark(self) -> dict[str, int]:
        """Where every column ends now, for :meth:`rollback`."""
        return dict(self.lengths)

    def rollback(self, mark: Mapping[str, int]) -> None:
        """Forget everything appended since ``mark``."""
        for name, length in mark.items():
            fh = self.files[name]
            fh.seek(length * self.dtypes[name].itemsize)
            fh.truncate()
            self.lengths[name] = length

    def close(self, sync: bool = False) -> dict[str, np.ndarray]:
        """Finish writing; the columns as arrays (memory maps of the files, or arrays over the buffers).

        Args:
            sync: flush the files to the disk (``fsync``) before returning, so that they survive a crash of
                the machine, not only of the process.
        """
        for fh in self.files.values():
            if self.folder is not None:
                fh.flush()
                if sync:
                    os.fsync(fh.fileno())
                fh.close()
        if self.folder is not None:
            return open_columns(self.folder, self.lengths, self.dtypes)
        return {
            name: np.frombuffer(fh.getbuffer(), dtype=self.dtypes[name])  # type: ignore[attr-defined]
            for name, fh in self.files.items()
        }


def open_columns(
    folder: Path, lengths: Mapping[str, int], dtypes: Mapping[str, np.dtype] = ITEM_COLUMNS
) -> dict[str, np.ndarray]:
    """Read-only memory maps of the columns in ``folder`` (``lengths``: elements per column).

    Raises:
        OSError: a column file is missing or shorter than ``lengths`` says.
    """
    arrays = {}
    for name, length in lengths.items():
        dtype = np.dtype(dtypes[name])
        path = folder / f"{name}.bin"
        size = path.stat().st_size
        if size != length * dtype.itemsize:
            raise OSError(f"{path}: {size} bytes, expected {length * dtype.itemsize}")
        arrays[name] = (
            np.memmap(path, dtype=dtype, mode="r", shape=(length,)) if length else np.zeros(0, dtype)
        )
    return arrays


class Strings(Sequence[str]):
    """Strings stored as one UTF-8 byte array and ``n + 1`` offsets into it (a memory map or an array)."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self.data, self.offsets = data, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"string {index} of {len(self)}")
        index %= len(self)
        return self.data[self.offsets[index] : self.offsets[index + 1]].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        """Equal to a list, tuple or :class:`Strings` of the same strings in the same order."""
        if not isinstance(other, (list, tuple, Strings)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Strings({list(self[:3])}{', ...' if len(self) > 3 else ''}; {len(self)})"


class Item(NamedTuple):
    """One kept sample, as training gets it: its ids and trained mask as the scan rendered them, and the images."""

    id: str
    file: str
    line: int | None
    input_ids: np.ndarray
    trained: np.ndarray
    images: list[str]
    image_turns: list[int]

    @property
    def labels(self) -> np.ndarray:
        """The labels: the id where trained, ``IGNORE_INDEX`` elsewhere. Made here from the mask, the one place,
        when the dataset's ``__getitem__`` (or check-data's dump) asks for them."""
        return np.where(self.trained, self.input_ids, IGNORE_INDEX)


@dataclass
class ScanItems:
    """The kept samples in flat columns (see the module docstring): on disk and memory-mapped when ``folder`` is
    set, else in memory.

    Attributes:
        input_ids, trained, offsets, item_lengths, file_index, lines, image_turns, image_offsets: the columns.
        ids: sample ids; ``images``: resolved image references, all samples' in order.
        files: the data files; ``file_index[i]`` says which one sample ``i`` came from.
        folder: where the columns live (None: in memory).
        column_lengths: elements per column (what reopening ``folder`` needs).
    """

    input_ids: np.ndarray
    trained: np.ndarray
    offsets: np.ndarray
    item_lengths: np.ndarray
    ids: Strings
    files: list[str]
    file_index: np.ndarray
    lines: np.ndarray
    images: Strings
    image_turns: np.ndarray
    image_offsets: np.ndarray
    folder: Path | None = None
    column_lengths: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_columns(
        cls, arrays: Mapping[str, np.ndarray], files: Sequence[str], folder: Path | None = None
    ) -> ScanItems:
        """The items over columns as :meth:`Columns.close` or :func:`open_columns` give them."""
        return cls(
            input_ids=arrays["input_ids"],
            trained=arrays["trained"],
            offsets=arrays["offsets"],
            item_lengths=arrays["item_lengths"],
            ids=Strings(arrays["id_bytes"], arrays["id_offsets"]),
            files=list(files),
            file_index=arrays["file_index"],
            lines=arrays["lines"],
            images=Strings(arrays["image_bytes"], arrays["image_ref_offsets"]),
            image_turns=arrays["image_turns"],
            image_offsets=arrays["image_offsets"],
            folder=folder,
            column_lengths={name: len(array) for name, array in arrays.items()},
        )

    @classmethod
    def open(cls, folder: Path, files: Sequence[str], column_lengths: Mapping[str, int]) -> ScanItems:
        """Memory-map the columns in ``folder``."""
        return cls.from_columns(open_columns(folder, column_lengths), files, folder)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A DataLoader worker started by spawn (or any pickling) reopens the files instead of copying them.
        if self.folder is not None:
            return (ScanItems.open, (self.folder, self.files, self.column_lengths))
        return super().__reduce_ex__(protocol)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sample (image spans counted), int64."""
        return self.item_lengths

    def __getitem__(self, index: int) -> Item:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        index %= len(self)
        start, end = self.offsets[index], self.offsets[index + 1]
        ids = np.asarray(self.input_ids[start:end])
        trained = np.asarray(self.trained[start:end])
        first, last = self.image_offsets[index], self.image_offsets[index + 1]
        line = int(self.lines[index])
        return Item(
            self.ids[index],
            self.files[self.file_index[index]],
            line or None,
            ids,
            trained,
            self.images[first:last],
            self.image_turns[first:last].tolist(),
        )

    def __iter__(self) -> Iterator[Item]:
        return (self[i] for i in range(len(self)))


class ItemsPart(NamedTuple):
    """The kept samples of one chunk, packed for the trip from a worker process to the writer.

    Attributes:
        input_ids, trained: the samples' tokens one after another.
        lengths: tokens per sample; ``lines``: where each starts.
        id_bytes, id_lengths: the ids, UTF-8, one after another.
        image_bytes, image_lengths, image_turns: every image reference, UTF-8, with the turn naming it.
        image_counts: images per sample.
    """

    input_ids: np.ndarray
    trained: np.ndarray
    lengths: np.ndarray
    lines: np.ndarray
    id_bytes: bytes
    id_lengths: np.ndarray
    image_bytes: bytes
    image_lengths: np.ndarray
    image_turns: np.ndarray
    image_counts: np.ndarray


class PartBuilder:
    """Collects kept samples of a chunk into one :class:`ItemsPart`."""

    def __init__(self) -> None:
        self.tokens: list[np.ndarray] = []
        self.trained: list[np.ndarray] = []
        self.lines: list[int] = []
        self.ids: list[bytes] = []
        self.images: list[bytes] = []
        self.image_turns: list[int] = []
        self.image_counts: list[int] = []

    def add(
        self,
        sample_id: str,
        line: int | None,
        input_ids: np.ndarray,
        trained: np.ndarray,
        images: Sequence[str],
        image_turns: Sequence[int],
    ) -> None:
        self.tokens.append(input_ids)
        self.trained.append(trained)
        self.lines.append(line or 0)
        self.ids.append(sample_id.encode("utf-8"))
        self.images += [ref.encode("utf-8") for ref in images]
        self.image_turns += image_turns
        self.image_counts.append(len(images))

    def build(self) -> ItemsPart:
        def lengths(values: Sequence[Any]) -> np.ndarray:
            return np.fromiter(map(len, values), dtype=np.int64, count=len(values))

        return ItemsPart(
            input_ids=np.concatenate(self.tokens) if self.tokens else np.zeros(0, np.int32),
            trained=np.concatenate(self.trained) if self.trained else np.zeros(0, bool),
            lengths=lengths(self.tokens),
            lines=np.asarray(self.lines, dtype=np.int32),
            id_bytes=b"".join(self.ids),
            id_lengths=lengths(self.ids),
            image_bytes=b"".join(self.images),
            image_lengths=lengths(self.images),
            image_turns=np.asarray(self.image_turns, dtype=np.int32),
            image_counts=np.asarray(self.image_counts, dtype=np.int64),
        )


class ItemsWriter:
    """Appends :class:`ItemsPart` s to the item columns of a :class:`Columns`, keeping the offsets running."""

    OFFSETS = ("offsets", "id_offsets", "image_ref_offsets", "image_offsets")

    def __init__(self, columns: Columns) -> None:
        self.columns = columns
        self.ends = dict.fromkeys(self.OFFSETS, 0)
        for name in self.OFFSETS:
            columns.append(name, [0])

    def add(self, part: ItemsPart, file_index: int) -> None:
        """Append the samples of ``part``, all from data file ``file_index``."""
        append = self.columns.append
        append("input_ids", part.input_ids)
        append("trained", part.trained)
        self._offsets("offsets", part.lengths)
        append("item_lengths", part.lengths)
        append("file_index", np.full(len(part.lengths), file_index, dtype=np.int32))
        append("lines", part.lines)
        append("id_bytes", np.frombuffer(part.id_bytes, dtype=np.uint8))
        self._offsets("id_offsets", part.id_lengths)
        append("image_bytes", np.frombuffer(part.image_bytes, dtype=np.uint8))
        self._offsets("image_ref_offsets", part.image_lengths)
        append("image_turns", part.image_turns)
        self._offsets("image_offsets", part.image_counts)

    def _offsets(self, name: str, lengths: np.ndarray) -> None:
        ends = self.ends[name] + np.cumsum(lengths, dtype=np.int64)
        self.columns.append(name, ends)
        if len(ends):
            self.ends[name] = int(ends[-1])

    def mark(self) -> tuple[dict[str, int], dict[str, int]]:
        """Where the columns end now, for :meth:`rollback`."""
        return self.columns.mark(), dict(self.ends)

    def rollback(self, mark: tuple[dict[str, int], dict[str, int]]) -> None:
        """Forget the parts added since ``mark``."""
        self.columns.rollback(mark[0])
        self.ends = dict(mark[1])


def result_columns(folder: Path | None) -> Columns:
    """The columns a scan writes: the items' and the lengths before truncation."""
    return Columns(folder, {**ITEM_COLUMNS, **LENGTHS_COLUMN})
