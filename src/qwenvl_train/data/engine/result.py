"""What a scan found: the kept samples' columns (:mod:`.columns`) with the counts and every error beside them
(:class:`ScanSummary`), saved and read back exactly (:meth:`ScanResult.save`, :meth:`ScanResult.load`), so that a
scan loaded from the cache reports what the scan that made it reported.

In the result's folder, beside the columns, ``scan.json`` holds the counts (:class:`ScanSummary`), notes, examples
and column lengths, and ``errors.jsonl`` every error, one per line.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...format.sample import DataProblem
from ..errors import DataValidationError, NoSamplesError
from ..options import DataOptions
from .columns import LENGTHS_COLUMN, ScanItems, open_columns

DUPLICATE_EXAMPLES = 5  # duplicate ids listed with their locations
LONG_EXAMPLES = 5  # samples over the maximum length listed
META_FILE = "scan.json"
ERRORS_FILE = "errors.jsonl"


@dataclass
class ScanSummary:
    """The counts of a scan; ``str()`` is the one-line report that training logs.

    Attributes:
        files, unreadable_files: data files given, and those lost whole (unreadable, not JSON, empty).
        samples_read: records read (a JSON Lines line that is not JSON counts as one).
        ok: samples without error (before truncation); ``skipped``: samples with one or more errors.
        kept: samples training gets.
        errors: every error, one line each; ``notes``: remarks that are not errors.
        too_long, dropped_too_long, cut, turns_removed: truncation (among samples without error).
        dropped_first_turns: leading assistant turns dropped by the ``reference`` policy.
        images: images in the kept samples; ``distinct_images``: distinct images checked.
        image_errors: errors about images (found by the ``verify_images`` check).
        turns, system_turns: user/assistant turns, and samples with their own system turn (samples without error).
        control_strings, control_samples: literal control-token strings kept as text, and samples holding any.
        duplicate_ids: samples whose explicit id was already used by an earlier sample;
            ``duplicate_examples``: the first few, with both locations.
        long_examples: the first few samples over ``max_len`` with their lengths.
    """

    files: int = 0
    unreadable_files: int = 0
    samples_read: int = 0
    ok: int = 0
    skipped: int = 0
    kept: int = 0
    errors: list[DataProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    too_long: int = 0
    dropped_too_long: int = 0
    cut: int = 0
    turns_removed: int = 0
    dropped_first_turns: int = 0
    images: int = 0
    distinct_images: int = 0
    image_errors: int = 0
    turns: int = 0
    system_turns: int = 0
    control_strings: Counter[str] = field(default_factory=Counter)
    control_samples: int = 0
    duplicate_ids: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    long_examples: list[str] = field(default_factory=list)
    max_len: int = 0
    truncation: str = "drop"
    policy: str = "assistant"

    # counts that add up when parts of the input are scanned separately
    ADDITIVE = (
        "samples_read", "ok", "skipped", "kept", "too_long", "dropped_too_long", "cut", "turns_removed",
        "dropped_first_turns", "images", "image_errors", "turns", "system_turns", "control_samples",
        "duplicate_ids",
    )  # fmt: skip

    def __str__(self) -> str:
        parts = [
            f"{self.kept}/{self.samples_read} samples kept from {self.files} file(s)",
            f"policy {self.policy}",
            f"{self.images} images",
            f"{self.too_long} over max_len {self.max_len} ({self.truncation}: "
            f"{self.dropped_too_long} dropped, {self.cut} cut, {self.turns_removed} turns removed)",
        ]
        if self.errors:
            parts.append(f"{len(self.errors)} errors, {self.skipped} samples skipped")
        if self.unreadable_files:
            parts.append(f"{self.unreadable_files} file(s) unreadable")
        if self.dropped_first_turns:
            parts.append(f"{self.dropped_first_turns} leading assistant turns dropped (reference policy)")
        if self.control_strings:
            parts.append(f"{sum(self.control_strings.values())} literal control tokens kept as text")
        if self.duplicate_ids:
            parts.append(f"{self.duplicate_ids} duplicate ids")
        if self.notes:
            parts.append(f"{len(self.notes)} note(s): " + " | ".join(self.notes))
        return "; ".join(parts)

    @property
    def changed(self) -> bool:
        """Something was left out, cut, dropped or kept as text: worth a warning rather than an info line."""
        return bool(
            self.too_long
            or self.skipped
            or self.unreadable_files
            or self.control_strings
            or self.dropped_first_turns
            or self.duplicate_ids
            or self.notes
        )

    def add(self, other: ScanSummary) -> None:
        """Add the counts, errors, notes and examples of a later part of the input."""
        for name in self.ADDITIVE:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors += other.errors
        self.notes += other.notes
        self.control_strings.update(other.control_strings)
        self.duplicate_examples += other.duplicate_examples[
            : max(0, DUPLICATE_EXAMPLES - len(self.duplicate_examples))
        ]
        self.long_examples += other.long_examples[: max(0, LONG_EXAMPLES - len(self.long_examples))]

    def to_json(self) -> dict[str, Any]:
        """Everything but the errors (kept one per line beside it), as JSON values."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "errors"}
        out["control_strings"] = dict(self.control_strings)
        return out

    @classmethod
    def from_json(cls, values: dict[str, Any], errors: list[DataProblem]) -> ScanSummary:
        """The summary :meth:`to_json` wrote, with its errors."""
        return cls(**{**values, "control_strings": Counter(values["control_strings"]), "errors": errors})


@dataclass
class ScanResult:
    """Everything the scan found.

    Attributes:
        items: the samples training gets.
        summary: the counts and every error.
        lengths: tokens of every sample without error, before truncation (what ``check-data``'s
            percentiles describe), int64.
        options, n_queries: what the scan was run with (``options`` as the caller gave them, also when the
            result came from the cache).
        bad_images: the distinct images the check refused (a cached result is reused only while they still
            fail: see :mod:`.cache`).
        folder: where the columns live (None: in memory).
        provenance: one line saying which process scanned, how long it took, and where the result is kept or was
            read from.
    """

    items: ScanItems
    summary: ScanSummary
    lengths: np.ndarray
    options: DataOptions
    n_queries: int
    bad_images: list[str] = field(default_factory=list)
    folder: Path | None = None
    provenance: str = ""

    def __reduce_ex__(self, protocol: Any) -> Any:
        # pickled (from the forked scan process, to a spawned worker) as a reference to its folder
        if self.folder is not None:
            state = (self.summary, self.options, self.n_queries, self.bad_images, self.provenance)
            return (
                _reopen,
                (self.folder, self.items.files, self.items.column_lengths, len(self.lengths), *state),
            )
        return super().__reduce_ex__(protocol)

    def raise_for_errors(self) -> None:
        """Apply ``on_error``.

        Raises:
            DataValidationError: ``on_error="raise"`` and some sample or file is bad (lists every error).
            NoSamplesError: no sample is left.
        """
        if self.summary.errors and self.options.on_error == "raise":
            raise DataValidationError(self.summary.errors)
        if not len(self.items):
            raise NoSamplesError(f"no training samples left: {self.summary}")

    def save(self, info: dict[str, Any]) -> None:
        """Write the counts, errors and column lengths beside the columns in :attr:`folder` (``info``: anything
        else worth keeping, such as who scanned and the cache key). ``scan.json`` is written last."""
        assert self.folder is not None
        with open(self.folder / ERRORS_FILE, "w", encoding="utf-8") as fh:
            for error in self.summary.errors:
                fh.write(json.dumps(dataclasses.asdict(error), ensure_ascii=False) + "\n")
        meta = {
            "files": self.items.files,
            "columns": self.items.column_lengths,
            "lengths": len(self.lengths),
            "n_queries": self.n_queries,
            "summary": self.summary.to_json(),
            "bad_images": self.bad_images,
            **info,
        }
        (self.folder / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, options: DataOptions) -> tuple[ScanResult, dict[str, Any]]:
        """The result :meth:`save` wrote in ``folder``, memory-mapped, with the rest of its ``scan.json``.

        Raises:
            OSError, ValueError, KeyError: the folder is not a complete scan.
        """
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        with open(folder / ERRORS_FILE, encoding="utf-8") as fh:
            errors = [DataProblem(**json.loads(line)) for line in fh]
        items = ScanItems.open(folder, meta["files"], meta["columns"])
        lengths = open_columns(folder, {"lengths": meta["lengths"]}, LENGTHS_COLUMN)["lengths"]
        summary = ScanSummary.from_json(meta["summary"], errors)
        result = cls(items, summary, lengths, options, meta["n_queries"], meta["bad_images"], folder)
        return result, meta


def _reopen(
    folder: Path,
    files: list[str],
    column_lengths: dict[str, int],
    n_lengths: int,
    summary: ScanSummary,
    options: DataOptions,
    n_queries: int,
    bad_images: list[str],
    provenance: str,
) -> ScanResult:
    items = ScanItems.open(folder, files, column_lengths)
    lengths = open_columns(folder, {"lengths": n_lengths}, LENGTHS_COLUMN)["lengths"]
    return ScanResult(items, summary, lengths, options, n_queries, bad_images, folder, provenance)
