"""The data layer's exceptions, in one place: what stops training (or a command) because of the data.

- :class:`TrainingDataError`: the data cannot be trained on; :class:`DataValidationError` (samples or files with
  errors, under ``--on_error raise``) and :class:`NoSamplesError` (nothing left) are its two cases.
- :class:`SampleLoadError`: an image failed when the DataLoader reached its sample.
- :class:`ImageError`: an image cannot be used (every loader failure, one line naming the image).

A problem of one sample found by the scan is not an exception but a record (``DataProblem``, one line naming file,
sample and turn); :class:`DataValidationError` lists them. Every class here is a
:class:`~qwenvl_train.errors.UserError`: the command line prints its one line. Cheap to import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..format.sample import DataProblem


class TrainingDataError(UserError, ValueError):
    """The data cannot be trained on; ``qwenvl-train train`` prints the message as lines and exits 1."""


class DataValidationError(TrainingDataError):
    """Raised when a dataset has errors and bad samples are not to be skipped."""

    def __init__(self, errors: Sequence[DataProblem], shown: int = 20) -> None:
        self.errors = list(errors)
        lines = [str(e) for e in self.errors[:shown]]
        more = len(self.errors) - shown
        if more > 0:
            lines.append(f"... and {more} more")
        super().__init__(
            f"{len(self.errors)} error(s) in the training data (run `qwenvl-train check-data` for the full "
            "report, or skip bad samples explicitly with --on_error skip):\n  " + "\n  ".join(lines)
        )


class NoSamplesError(TrainingDataError):
    """Nothing is left to train on."""


class SampleLoadError(UserError, RuntimeError):
    """An image failed to load in ``__getitem__`` under ``on_error="raise"`` (the message names file, sample,
    turn and image). Raised again by the DataLoader when it happened in a worker: :attr:`line` recovers the
    one line from the traceback text the DataLoader wraps around it. Only the rank that loaded the image knows of
    it, so every rank prints its own."""

    every_rank = True

    @property
    def line(self) -> str:
        """The one-line message, also when the DataLoader re-raised this from a worker process."""
        text = str(self).strip()
        prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
        last = text.splitlines()[-1] if text else text
        return last[len(prefix) :] if last.startswith(prefix) else last


class ImageError(UserError, ValueError):
    """An image cannot be used; the message is one line.

    Attributes:
        transient: a network failure that may go away when tried again.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
