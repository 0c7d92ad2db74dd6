"""Reading JSON piece by piece: values, lines and errors exactly as when the whole file is read at once, whatever
the block size (blocks of a few bytes cut every value, every multi-byte character and every line break)."""

from __future__ import annotations

import codecs
import io
import json
from pathlib import Path

import pytest

import qwenvl_train.data.engine.reader as js
from qwenvl_train.data.engine.reader import (
    Cursor,
    JsonSyntaxError,
    TextDecodeError,
    TextStream,
    iter_lines,
    iter_list,
    iter_values,
)
from qwenvl_train.data.engine.records import FileRecords

SAMPLES = [
    {"id": "a", "conversations": [{"from": "user", "value": "Grüße, 你好 \u00e9\U0001f600"}, {"from": "gpt", "value": "x"}]},
    {"id": 7, "conversations": [{"from": "user", "value": "line\nbreak \\ \"quoted\""}]},
    [1, 2.5e3, None, True],
    12345,
    "a string",
]  # fmt: skip
BLOCKS = [1, 2, 3, 7, 64, None]  # None: the default block


def stream(data: bytes, block: int | None) -> TextStream:
    return TextStream(io.BytesIO(data), block)


def cursor(data: bytes, block: int | None, monkeypatch: pytest.MonkeyPatch) -> Cursor:
    if block:
        monkeypatch.setattr(js, "BLOCK", block)  # also how far the window grows and when it is cut
    return Cursor(stream(data, block))


@pytest.mark.parametrize("block", BLOCKS)
def test_a_list_is_its_elements_with_their_lines(block, monkeypatch):
    text = json.dumps(SAMPLES, indent=2, ensure_ascii=False)
    c = cursor(("\ufeff" + text).encode(), block, monkeypatch)
    assert c.skip_whitespace() == "["
    got = list(iter_list(c))
    assert [json.loads(t) for t, _ in got] == SAMPLES
    lines = text.split("\n")
    for (value_text, line), sample in zip(got, SAMPLES, strict=True):
        start = value_text.split("\n")[0]
        assert lines[line - 1].strip().startswith(start), (line, start)
        assert json.loads(value_text) == sample


@pytest.mark.parametrize("block", BLOCKS)
def test_values_one_after_another(block, monkeypatch):
    text = "\r\n".join(json.dumps(s, indent=1) for s in SAMPLES) + "\r\n"
    got = list(iter_values(cursor(text.encode(), block, monkeypatch)))
    assert [json.loads(t) for t, _ in got] == SAMPLES
    starts, line = [], 1
    for sample in SAMPLES:
        starts.append(line)
        line += json.dumps(sample, indent=1).count("\n") + 1
    assert [line for _, line in got] == starts


@pytest.mark.parametrize("block", BLOCKS)
def test_lines_as_text_mode_reads_them(block, tmp_path):
    text = "a\r\nb\rc\n\nd é\r\n\r\nlast"
    (tmp_path / "f").write_bytes(text.encode())
    with open(tmp_path / "f", encoding="utf-8") as fh:  # universal newlines: what the whole-file reader saw
        expected = fh.read().split("\n")
    got = list(iter_lines(stream(text.encode(), block)))
    assert got == [(line, i) for i, line in enumerate(expected, start=1)]


@pytest.mark.parametrize(
    ("text", "reason", "where"),
    [
        ('[{"a": 1},\n {"b" 2}]', "Expecting ':' delimiter", (2, 7)),
        ('[{"a": 1}\n {"b": 2}]', "expected ',' or ']' at '{'", (2, 2)),
        ('[{"a": 1},', "Expecting value", (1, 11)),
        ('[{"a": 1}', "unexpected end of file", (1, 10)),
        ('[{"a": 1}]\n x', "extra data after the list", (2, 2)),
        ('[{"a": "é\u00e9", "b": tru}]', "Expecting value", (1, 19)),
    ],
)
@pytest.mark.parametrize("block", BLOCKS)
def test_bad_json_is_placed_where_the_decoder_places_it(text, reason, where, block, monkeypatch):
    try:  # where json.loads of the whole text places it, when the decoder finds it
        json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == reason:
            assert (exc.lineno, exc.colno) == where
    c = cursor(text.encode(), block, monkeypatch)
    c.skip_whitespace()
    with pytest.raises(JsonSyntaxError) as info:
        list(iter_list(c))
    assert (info.value.reason, info.value.line, info.value.col) == (reason, *where)


def test_a_number_cut_by_the_block_is_read_whole(monkeypatch):
    got = list(iter_values(cursor(b"1234567 89", 3, monkeypatch)))
    assert got == [("1234567", 1), ("89", 1)]


@pytest.mark.parametrize("block", [1, 2, 5, None])
@pytest.mark.parametrize("data", [b'[{"a": "ok"}, \xff]', b"\xef\xbb\xbf[1, \xe4\xbd]", b"[1, 2]\xe4"])
def test_bytes_that_are_not_utf8_are_placed_as_python_places_them(data, block):
    with pytest.raises(UnicodeDecodeError) as whole:
        codecs.decode(data, "utf-8-sig")
    with pytest.raises(TextDecodeError) as info:
        s = stream(data, block)
        while s.read():
            pass
    assert str(info.value) == str(whole.value)


# ---------------------------------------------------------------- whole files, as the scan reads them
FILES = {
    "list.json": json.dumps(SAMPLES[:2], indent=1, ensure_ascii=False),
    "list.jsonl": json.dumps(SAMPLES[:2], indent=1),
    "lines.jsonl": "\n".join(json.dumps(s) for s in SAMPLES[:2]) + "\n\n   \n",
    "pretty.jsonl": "\n".join(json.dumps(s, indent=2) for s in SAMPLES[:2]),
    "lines.json": "\n".join(json.dumps(s) for s in SAMPLES[:2]),
    "one.json": "\n\n" + json.dumps(SAMPLES[0], indent=1),
    "bad_line.jsonl": '{"id": 1}\n{oops}\n\n{"id": 2}\n',
    "bad_first_line.jsonl": '{oops}\n{"id": 2}\n',
    "empty.json": " \n\t\n",
    "empty_list.json": "[ ]",
    "bad.json": '[{"id": 1}, {"id": 2} {"id": 3}]',
    "two_values.json": '"a" "b"',
}


def records(path: Path) -> tuple[list, list[str], list[str]]:
    got = FileRecords(path)
    return [tuple(r) for r in got], [str(e) for e in got.errors], got.notes


@pytest.mark.parametrize("name", FILES)
def test_every_format_reads_the_same_whatever_the_block(name, tmp_path, monkeypatch):
    path = tmp_path / name
    path.write_text(FILES[name], encoding="utf-8")
    expected = records(path)
    for block in (1, 3, 16):
        monkeypatch.setattr(js, "BLOCK", block)
        assert records(path) == expected, block
    texts, errors, notes = expected
    if name in ("list.json", "list.jsonl", "lines.jsonl", "pretty.jsonl", "lines.json"):
        assert [json.loads(t) for t, _, _ in texts] == SAMPLES[:2] and not errors
        assert [index for _, _, index in texts] == [0, 1]
    expected_notes = {
        "list.jsonl": "holds one JSON list, not JSON Lines",
        "pretty.jsonl": "holds JSON written over several lines per sample",
        "lines.json": "holds JSON Lines, not a JSON list",
    }
    assert [n.split(": ", 1)[1][: len(expected_notes[name])] for n in notes] == (
        [expected_notes[name]] if name in expected_notes else []
    )
    if name == "one.json":
        assert [(line, index) for _, line, index in texts] == [(3, 0)]
    if name in ("bad_line.jsonl", "bad_first_line.jsonl"):  # the bad line is a record; the decoder finds it
        assert [(t, line) for t, line, _ in texts][-1] == ('{"id": 2}', 4 if name == "bad_line.jsonl" else 2)
        assert not errors and not notes
    whole_file = {
        "empty.json": [f"{path}: empty file"],
        "empty_list.json": [f"{path}: no samples in file"],
        "bad.json": [f"{path}:1:23: bad JSON: expected ',' or ']' at '{{'"],
        "two_values.json": [f"{path}:1:5: bad JSON: Extra data"],
    }
    assert errors == whole_file.get(name, [])


# ---------------------------------------------------------------- input that is not JSON, or too much for Python
@pytest.mark.parametrize("block", [16, 64])
@pytest.mark.parametrize(
    "text", ["name,age\nann,3\n" * 2000, '{"a": 1, "b": tru\n' + "x" * 50_000, "[1, 2, @" + " " * 50_000]
)
def test_text_that_is_not_json_fails_without_reading_on(text, block, monkeypatch):
    c = cursor(text.encode(), block, monkeypatch)
    with pytest.raises(JsonSyntaxError):
        list(iter_values(c)) if text[0] != "[" else (c.skip_whitespace(), list(iter_list(c)))
    assert c.stream.bytes_read <= 4 * block  # the window grew only while the decoder ran out of text


@pytest.mark.parametrize("block", [3, 16, None])
def test_a_value_cut_anywhere_by_the_window_is_read_whole(block, monkeypatch):
    value = (
        '{"a": [1, -2.5e-3, true, false, null, -Infinity, "x\\u00e9\\\\\\"\\n"], "bb": {"c": "'
        + "y" * 40
        + '"}}'
    )
    got = list(iter_values(cursor((value + " " + value).encode(), block, monkeypatch)))
    assert [t for t, _ in got] == [value, value]


DEEP = "[" * 10_000 + '"]" ' + "]" * 10_000
HUGE = "7" * 5000


@pytest.mark.parametrize("block", [7, None])
def test_values_python_cannot_decode_are_still_cut_out_whole(block, monkeypatch):
    text = f'[{DEEP}, {{"id": {HUGE}}}, "after"]'
    c = cursor(text.encode(), block, monkeypatch)
    c.skip_whitespace()
    assert [t for t, _ in iter_list(c)] == [DEEP, f'{{"id": {HUGE}}}', '"after"']
    assert js.is_json(DEEP) and js.is_json(HUGE) and not js.is_json(DEEP + "]")


def test_a_deep_value_cut_by_the_end_of_the_file_is_bad_json(monkeypatch):
    c = cursor(("[" * 5000 + '"a\\"').encode(), 64, monkeypatch)
    with pytest.raises(JsonSyntaxError, match="unexpected end of file"):
        list(iter_values(c))
