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

Memory stays bounded by the value being read: the window grows only while the decoder ran out of text (the error
is at the window's end, or in a string that runs to it), so text that is not JSON fails after one block. Valid JSON
that Python's decoder cannot turn into objects is still cut out as a value, for the record's own decoding to
report: integers longer than Python's digit limit (the cutting decoder keeps numbers as text) and nesting deeper
than the recursion limit (the value's end found by counting brackets, :func:`_bracketed_end`).
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
CUT_TOKEN = (
    16  # an error this close to the window's end may be a token the block cut ("fals", "\\u12", "-Infinit")
)
_UNTERMINATED = "Unterminated string"  # the decoder's message for a string that runs to the end of its text
_BRACKET_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.S)  # a string (maybe cut) or a bracket


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
        self.decoder = json.JSONDecoder(parse_int=str)  # cuts values out: numbers need not become ints
        self.counted = 0  # newlines before window[counted] are counted in `line`
        self.line = 1
        self.col0 = 0  # 0-based column of window[0]

    def more(self, size: int | None = None) -> bool:
        """Read the next piece into the window; False at the end of the file."""
        if self.pos > BLOCK and self.pos * 2 > len(self.window):
            self._drop_consumed()
        text = self.stream.read(size)
        self.window += text
        return bool(text)

    def _drop_consumed(self) -> None:
        """Drop the part of the window before the position (its lines counted, the column of what is left kept)."""
        self._count_lines(self.pos)
        self.col0 = self._column(self.pos)
        self.window, self.counted, self.pos = self.window[self.pos :], 0, 0

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
        it. The window grows until the value is whole, and only while the decoder ran out of text.

        Raises:
            JsonSyntaxError: it is not JSON.
        """
        while True:
            try:
                _, end = self.decoder.raw_decode(self.window, self.pos)
            except json.JSONDecodeError as exc:
                if self._ran_out(exc) and self.more(max(BLOCK, len(self.window) - self.pos)):
                    continue  # a huge value: decoded log(n) times
                raise self.error(exc.msg, exc.pos) from None
            except RecursionError:  # valid or not, deeper than Python decodes: its end by its brackets
                found = _bracketed_end(self.window, self.pos)
                if found is None:
                    if self.more(max(BLOCK, len(self.window) - self.pos)):
                        continue
                    raise self.error("unexpected end of file", len(self.window)) from None
                end = found
            except ValueError as exc:  # any other failure of the decoder is bad JSON here too
                raise self.error(f"cannot decode ({exc})", self.pos) from None
            if end == len(self.window) and self.window[end - 1] in _NUMBER_END and self.more():
                continue  # "12" may be the start of "1234"
            text, line = self.window[self.pos : end], self._count_lines(self.pos)
            self.pos = end
            if end > BLOCK:  # a large value: the window holding it goes now, not with the next read
                self._drop_consumed()
            return text, line

    def _ran_out(self, exc: json.JSONDecodeError) -> bool:
        """The decoder failed because the window ended (more text may complete the value), not on a character
        that no more text can make right."""
        return exc.msg.startswith(_UNTERMINATED) or len(self.window) - exc.pos <= CUT_TOKEN


def _bracketed_end(text: str, pos: int) -> int | None:
    """Where the array or object starting at ``text[pos]`` ends, by counting brackets outside strings (no
    recursion, whatever the depth); None when ``text`` ends first. Only the extent: the value is checked when it is
    decoded."""
    depth = 0
    for match in _BRACKET_TOKEN.finditer(text, pos):
        token = match.group()
        if token[0] == '"':
            if len(token) == 1 or token[-1] != '"' or _escaped_end(token):
                return None  # a string cut by the window's end
            continue
        depth += 1 if token in "[{" else -1
        if depth == 0:
            return match.end()
    return None


def _escaped_end(token: str) -> bool:
    """The closing quote of a matched string is escaped (an odd number of backslashes before it)."""
    body = token[1:-1]
    return (len(body) - len(body.rstrip("\\"))) % 2 == 1


def is_json(text: str) -> bool:
    """``text`` is one JSON value (integers of any length; nesting of any depth counts as JSON here, for the
    record's decoding to report)."""
    start = _WHITESPACE.match(text).end()
    try:
        _, end = json.JSONDecoder(parse_int=str).raw_decode(text, start)
    except RecursionError:
        found = _bracketed_end(text, start)
        if found is None:
            return False
        end = found
    except ValueError:
        return False
    return _WHITESPACE.match(text, end).end() == len(text)


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
