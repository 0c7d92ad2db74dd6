"""An answer's text as it grows: the new text of each step, held back while it may still change.

The answer is decoded as the CLI decodes it (:func:`qwenvl_train.inference.generation.decode_answer`: tags
kept, outer whitespace stripped), so each text is the one before plus a tail. A tail is held back while it
ends in an incomplete UTF-8 character, or while its end could be the start of a stop string; a stop string
ends the answer before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..inference.generation import decode_answer


class AnswerText:
    """Turns the answer ids of one row into text deltas, honouring the request's stop strings."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.shown = ""
        self.stopped = False

    def update(self, ids: Sequence[int]) -> str:
        """The text to send after the answer grew to ``ids`` ("" while held back); sets ``stopped``."""
        text = decode_answer(self.tokenizer, ids)
        for stop in self.stop:
            at = text.find(stop)
            if at >= 0:
                text = text[:at].rstrip()
                self.stopped = True
        if not self.stopped:
            if text.endswith("\ufffd"):
                return ""
            text = text[: len(text) - self._partial_stop(text)]
        if not text.startswith(self.shown):  # cannot happen for a growing answer; never send a wrong prefix
            return ""
        delta, self.shown = text[len(self.shown) :], text
        return delta

    def finish(self, ids: Sequence[int]) -> str:
        """The rest of the text once the answer is complete (nothing is held back any more)."""
        if self.stopped:
            return ""
        text = decode_answer(self.tokenizer, ids)
        if not text.startswith(self.shown):
            return ""
        delta, self.shown = text[len(self.shown) :], text
        return delta

    def _partial_stop(self, text: str) -> int:
        """The length of the longest end of ``text`` that begins a stop string."""
        longest = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    longest = max(longest, n)
                    break
        return longest
