"""Read JSON text piece by piece: the text of each value with the line where it starts, never the whole file.

- :class:`TextStream` decodes a binary file as UTF-8 in blocks; a leading byte-order mark is dropped and
  ``\\r\\n`` and ``\\r`` read as ``\\n``, as Python's text mode does, so lines and columns are those a text
  editor shows.
- :func:`iter_lines` gives the lines of the text; :class:`Cursor` walks JSON values through a window of the
  text that is dropped as it is consumed: :func:`iter_list` gives the elements of a JSON array,
  :func:`iter_values` the values written one after another (each over any number of lines). Each value is
  given as its own text (to be decoded again where it is used, typically in a worker process of the scan).

Bad JSON raises :class:`JsonSyntaxError` (reason, line, column); bytes that are not UTF-8 raise
:class:`TextDecodeError` with their byte position. This module knows nothing of conversations (see
:mod:`.records`).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import BinaryIO

BLOCK = 1 << 20  # bytes read at a time
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace (str.strip() would take more)
_NUMBER_END = frozenset("0123456789+-.eE")  # a number that ends the window may go on in the next block


class TextDecodeError(ValueError):
    """The file is not UTF-8; the message gives the byte position as Python's own decoder would."""


class JsonSyntaxError(ValueError):
    """Bad JSON at ``line``:``col`` (1-based); ``reason`` is the decoder's message."""

    def __init__(self, reason: str, line: int, col: int) -> None:
        super().__init__(f"{reason} at line {line} column {col}")
        self.reason, self.line, self.col = reason, line, col


class TextStream:
    """The text of a binary file, block after block.

    Attributes:
        bytes_read: bytes taken from the file so far (for progress bars).
        eof: the last piece has been returned.
    """

    def __init__(self, fh: BinaryIO, block: int | None = None) -> None:
        self.fh, self.block = fh, block or BLOCK
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.bytes_read = 0
        self.offset = 0  # position (after the byte-order mark) of the next byte given to the decoder
        self.first = True
        self.carry_cr = False  # the last piece ended with "\r": it may be half of "\r\n"
        self.eof = False

    def read(self, size: int | None = None) -> str:
        """The next piece of text: about ``size`` bytes' worth (one block by default); ``""`` at the end.

        Raises:
            TextDecodeError: bytes that are not UTF-8 (the position counts from the start of the file, after
                a byte-order mark).
        """
        while not self.eof:
            size = size or self.block
            data = self.fh.read(max(size, len(codecs.BOM_UTF8)) if self.first else size)
            self.bytes_read += len(data)
            final = not data
            if self.first:
                self.first = False
                if data.startswith(codecs.BOM_UTF8):
                    data = data[len(codecs.BOM_UTF8) :]
            pending = len(self.decoder.getstate()[0])  # bytes of a character cut at the previous block's end
            try:
                text = self.decoder.decode(data, final)
            except UnicodeDecodeError as exc:
                raise TextDecodeError(_decode_message(exc, self.offset - pending)) from None
            self.offset += len(data)
            self.eof = final
            text = self._newlines(text, final)
            if text:
                return text
        return ""

    def _newlines(self, text: str, final: bool) -> str:
        if self.carry_cr:
            text, self.carry_cr = "\r" + text, False
        if text.endswith("\r") and not final:
            text, self.carry_cr = text[:-1], True
        return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _decode_message(exc: UnicodeDecodeError, base: int) -> str:
    """CPython's message for ``exc`` with positions counted from ``base`` (the decoder saw a slice)."""
    start, end = base + exc.start, base + exc.end
    if exc.end - exc.start == 1:
        byte = exc.object[exc.start]
        return f"'{exc.encoding}' codec can't decode byte 0x{byte:02x} in position {start}: {exc.reason}"
    return f"'{exc.encoding}' codec can't decode bytes in position {start}-{end - 1}: {exc.reason}"


def iter_lines(stream: TextStream) -> Iterator[tuple[str, int]]:
    """Every line of the text (blank ones too) with its 1-based number, without the ``\\n``."""
    rest, number = "", 0
    while text := stream.read():
        lines = (rest + text).split("\n")
        rest = lines.pop()
        for line in lines:
            number += 1
            yield line, number
    if rest:
        yield rest, number + 1


class Cursor:
    """A position in the text and a window of it: what lies before the position is dropped as it goes.

    Positions are indices into ``window``; :meth:`where` turns one into a 1-based (line, column).
    """

    def __init__(self, stream: TextStream) -> None:
        self.stream = stream
        self.window = ""
        self.pos = 0
        self.decoder = json.JSONDecoder()
        self.counted = 0  # newlines before window[counted] are counted in `line`
        self.line = 1
        self.col0 = 0  # 0-based column of window[0]

    def more(self, size: int | None = None) -> bool:
        """Read the next piece into the window; False at the end of the file."""
        if self.pos > BLOCK and self.pos * 2 > len(self.window):  # drop the consumed part
            self._count_lines(self.pos)
            self.col0 = self._column(self.pos)
            self.window, self.counted, self.pos = self.window[self.pos :], 0, 0
        text = self.stream.read(size)
        self.window += text
        return bool(text)

    def _count_lines(self, pos: int) -> int:
        """The line of ``pos``; positions asked for never go back (each value starts after the last)."""
        if pos > self.counted:
            self.line += self.window.count("\n", self.counted, pos)
            self.counted = pos
        return self.line

    def _column(self, pos: int) -> int:
        start = self.window.rfind("\n", 0, pos) + 1
        return pos - start if start else self.col0 + pos

    def where(self, pos: int) -> tuple[int, int]:
        """1-based (line, column) of ``pos`` (at or after the start of the last value given)."""
        return self._count_lines(pos), self._column(pos) + 1

    def error(self, reason: str, pos: int) -> JsonSyntaxError:
        """A :class:`JsonSyntaxError` at ``pos``."""
        return JsonSyntaxError(reason, *self.where(pos))

    def skip_whitespace(self) -> str:
        """Move past whitespace; the next character, or ``""`` at the end of the file."""
        while True:
            self.pos = _WHITESPACE.match(self.window, self.pos).end()
            if self.pos < len(self.window):
                return self.window[self.pos]
            if not self.more():
                return ""

    def value(self) -> tuple[str, int]:
        """The JSON value at the position, as its text, with the line where it starts; the position moves past
        it. The window grows until the value is whole.

        Raises:
            JsonSyntaxError: it is not JSON.
        """
        while True:
            try:
                _, end = self.decoder.raw_decode(self.window, self.pos)
            except json.JSONDecodeError as exc:
                if self.more(max(BLOCK, len(self.window) - self.pos)):  # a huge value: decoded log(n) times
                    continue
                raise self.error(exc.msg, exc.pos) from None
            if end == len(self.window) and self.window[end - 1] in _NUMBER_END and self.more():
                continue  # "12" may be the start of "1234"
            text, line = self.window[self.pos : end], self._count_lines(self.pos)
            self.pos = end
            return text, line


def iter_list(cursor: Cursor) -> Iterator[tuple[str, int]]:
    """The elements of the JSON array whose ``[`` is at the cursor, as ``(text, line)``; nothing but
    whitespace may follow the array.

    Raises:
        JsonSyntaxError: bad JSON anywhere in the array, or something after it.
    """
    cursor.pos += 1
    if cursor.skip_whitespace() == "]":
        cursor.pos += 1
    else:
        while True:
            yield cursor.value()
            char = cursor.skip_whitespace()
            if char == ",":
                cursor.pos += 1
                cursor.skip_whitespace()
                continue
            if char == "]":
                cursor.pos += 1
                break
            reason = "unexpected end of file" if not char else f"expected ',' or ']' at {char!r}"
            raise cursor.error(reason, cursor.pos)
    if cursor.skip_whitespace():
        raise cursor.error("extra data after the list", cursor.pos)


def iter_values(cursor: Cursor) -> Iterator[tuple[str, int]]:
    """JSON values written one after another from the cursor to the end, as ``(text, line)``.

    Raises:
        JsonSyntaxError: something that is not JSON.
    """
    while cursor.skip_whitespace():
        yield cursor.value()
