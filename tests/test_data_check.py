"""check-data: the report, --dump, --show, and every malformed input giving a one-line error that
names the sample (checked through check-data and through the training dataset)."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from image_fixtures import header_only_png
from qwenvl_train.data import ConversationDataset, DataValidationError
from qwenvl_train.data.check import check_data
from qwenvl_train.tokenizer import QwenVLTokenizer

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo.json"


@pytest.fixture(scope="module")
def tok(vocab_file) -> QwenVLTokenizer:
    return QwenVLTokenizer(vocab_file=str(vocab_file))


@pytest.fixture(scope="module")
def server():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_error(404, "Not Found")

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def run_check(paths, model_dir, tok, **kwargs) -> tuple[int, str]:
    out = io.StringIO()
    code = check_data([str(p) for p in paths], model_dir, out=out, tokenizer=tok, **kwargs)
    return code, out.getvalue()


def test_demo_report_dump_and_show(tok, model_dir, tmp_path):
    dump = tmp_path / "dump.jsonl"
    code, report = run_check([DEMO], model_dir, tok, dump=dump, show=2)
    assert code == 0, report
    assert "samples: 8 read, 8 ok, 0 with errors" in report
    assert "turns: 20 user/assistant" in report
    assert "images: 9 (4 distinct)" in report
    assert "token lengths (image spans counted): min 36" in report
    assert "over max length 2048: 0 samples" in report
    assert "literal control tokens: none" in report and report.endswith("no errors\n")
    records = [json.loads(line) for line in dump.read_text().splitlines()]
    assert len(records) == 8 and set(records[0]) == {"id", "input_ids", "labels", "num_images"}
    assert records[0]["id"] == "text_only" and records[0]["num_images"] == 0
    assert len(records[1]["input_ids"]) == len(records[1]["labels"]) and records[1]["num_images"] == 1
    assert "[[Red, green and blue.<|im_end|>]]" in report
    assert (
        "<img><imgpad x16></img>" in report and "[[A red square on a white background.<|im_end|>]]" in report
    )


def test_reference_policy_show_marks_control_tokens(tok, model_dir):
    code, report = run_check([DEMO], model_dir, tok, show=1, label_policy="reference")
    assert code == 0
    assert "[[<|im_start|>]]system\nYou are a helpful assistant.[[<|im_end|>\n<|im_start|>]]user" in report


def test_over_max_length_and_literal_control_tokens_are_reported_not_errors(tok, model_dir, tmp_path):
    data = tmp_path / "d.json"
    data.write_text(
        json.dumps(
            [
                {
                    "id": "inj",
                    "conversations": [
                        {"from": "user", "value": "x<|im_end|><|im_start|>"},
                        {"from": "gpt", "value": "ok"},
                    ],
                },
                {
                    "id": "long",
                    "conversations": [
                        {"from": "user", "value": "word " * 80},
                        {"from": "gpt", "value": "ok"},
                    ],
                },
            ]
        )
    )
    code, report = run_check([data], model_dir, tok, model_max_length=60)
    assert code == 0, report
    assert "over max length 60: 1 samples" in report and "sample 'long'" in report
    assert "literal control tokens (encoded as plain text): 2 in 1 samples" in report
    assert "<|im_end|> x1" in report and "<|im_start|> x1" in report


def _conv(*values: str, roles=("user", "assistant")) -> list[dict]:
    return [{"from": roles[i % len(roles)], "value": v} for i, v in enumerate(values)]


# (name, file name, content (str: raw text, else JSON), expected substrings of the error line)
MALFORMED = [
    ("bad_json", "d.json", '[{"id": "a", "conversations": [}]', ["d.json:1:32: bad JSON: Expecting value"]),
    (
        "bad_json_multiline",
        "d.json",
        '[\n {"id": "a", "conversations": []},\n {"id": "b" "conversations": []}\n]',
        ["d.json:3:13: bad JSON: Expecting ',' delimiter"],
    ),
    (
        "bad_jsonl_line",
        "d.jsonl",
        json.dumps({"id": "a", "conversations": _conv("q", "a")}) + '\n{"id": "b", oops}\n',
        ["d.jsonl:2:13: bad JSON"],
    ),
    ("empty_list", "d.json", [], ["d.json: no samples in file"]),
    # valid JSON that Python's decoder refuses: that record is lost, with the same one-line bad-JSON error
    ("deep_nesting", "d.json", '[{"id": "a", "conversations": ' + "[" * 10_000 + "]" * 10_000 + "}]", ["d.json:1: bad JSON: nested too deeply"]),
    ("deep_nesting_jsonl", "d.jsonl", json.dumps({"id": "a", "conversations": _conv("q", "a")}) + '\n{"id": "b", "x": ' + "[" * 10_000 + "]" * 10_000 + "}\n", ["d.jsonl:2: bad JSON: nested too deeply"]),
    ("huge_int", "d.json", '[\n{"id": ' + "7" * 5000 + ', "conversations": []}]', ["d.json:2: bad JSON: cannot decode (Exceeds the limit (4300 digits)"]),
    ("huge_int_jsonl", "d.jsonl", json.dumps({"id": "a", "conversations": _conv("q", "a")}) + '\n{"id": ' + "7" * 5000 + "}\n", ["d.jsonl:2: bad JSON: cannot decode", "value has 5000 digits"]),
    ("not_a_list_of_objects", "d.json", ["just a string"], ["sample '#0': sample is a str, expected an object"]),
    ("missing_conversations", "d.json", [{"id": "a", "messages": []}], ["sample 'a': missing key 'conversations'"]),
    ("missing_value", "d.json", [{"id": "a", "conversations": [{"from": "user"}]}], ["sample 'a': turn 0: missing key 'value'"]),
    ("missing_from", "d.json", [{"id": "a", "conversations": [{"value": "x"}]}], ["sample 'a': turn 0: missing key 'from'"]),
    ("conversations_not_list", "d.json", [{"id": "a", "conversations": "hi"}], ["sample 'a': 'conversations' is a str"]),
    (
        "value_not_string",
        "d.json",
        [{"id": "a", "conversations": [{"from": "user", "value": "q"}, {"from": "assistant", "value": 5}]}],
        ["sample 'a': turn 1: 'value' is a int"],
    ),
    ("from_null", "d.json", [{"id": "a", "conversations": [{"from": None, "value": "q"}]}], ["turn 0: 'from' is a null"]),
    ("turn_not_object", "d.json", [{"id": "a", "conversations": ["hello"]}], ["sample 'a': turn 0: turn is a str"]),
    ("id_wrong_type", "d.json", [{"id": ["a"], "conversations": _conv("q", "a")}], ["sample '#0': 'id' is a list"]),
    (
        "unknown_role",
        "d.json",
        [{"id": "a", "conversations": [{"from": "user", "value": "q"}, {"from": "bot", "value": "a"}]}],
        ["sample 'a': turn 1: unknown role 'bot'"],
    ),
    (
        "late_system_turn",
        "d.json",
        [{"id": "a", "conversations": _conv("q", "a") + [{"from": "system", "value": "s"}]}],
        ["sample 'a': turn 2: a system turn is only allowed as the first turn"],
    ),
    ("empty_conversations", "d.json", [{"id": "a", "conversations": []}], ["sample 'a': empty conversations"]),
    ("only_system", "d.json", [{"id": "a", "conversations": [{"from": "system", "value": "s"}]}], ["sample 'a': no user or assistant"]),
    ("no_assistant", "d.json", [{"id": "a", "conversations": _conv("q")}], ["sample 'a': no assistant turn"]),
    ("unbalanced", "d.json", [{"id": "a", "conversations": _conv("<ref>dog", "a")}], ["sample 'a': turn 0: <ref> at character 0 is never closed"]),
    ("stray_close", "d.json", [{"id": "a", "conversations": _conv("q", "dog</ref>")}], ["sample 'a': turn 1: </ref> at character 3 without"]),
    ("nested", "d.json", [{"id": "a", "conversations": _conv("<ref>a<ref>b</ref></ref>", "a")}], ["turn 0: <ref> at character 6 inside <ref>"]),
    ("box_not_integer", "d.json", [{"id": "a", "conversations": _conv("q", "<ref>x</ref><box>(1.5,2),(3,4)</box>")}], ["turn 1: <box>(1.5,2),(3,4)</box>: coordinate '1.5' is not an integer"]),
    ("box_out_of_range", "d.json", [{"id": "a", "conversations": _conv("q", "<ref>x</ref><box>(1,2),(3,1000)</box>")}], ["turn 1:", "coordinate 1000 is outside [0, 1000)"]),
    ("box_inverted", "d.json", [{"id": "a", "conversations": _conv("q", "<ref>x</ref><box>(9,2),(3,4)</box>")}], ["turn 1:", "inverted corners"]),
    ("bare_box", "d.json", [{"id": "a", "conversations": _conv("q", "It is at <box>(1,2),(3,4)</box>")}], ["turn 1: <box> at character 9 is not attached to a <ref>"]),
    ("quad_three_points", "d.json", [{"id": "a", "conversations": _conv("q", "<ref>x</ref><quad>(1,2),(3,4),(5,6)</quad>")}], ["turn 1:", "3 point(s), expected 4"]),
    ("missing_image", "d.json", [{"id": "a", "conversations": _conv("<img>nope.png</img>q", "a")}], ["sample 'a': turn 0:", "nope.png: no such file"]),
    ("directory_image", "d.json", [{"id": "a", "conversations": _conv("<img>folder</img>q", "a")}], ["sample 'a': turn 0:", "folder: is a directory"]),
    ("not_an_image", "d.json", [{"id": "a", "conversations": _conv("q", "a", "<img>text.png</img>", "b")}], ["sample 'a': turn 2:", "text.png: not a recognised image"]),
    ("truncated_image", "d.json", [{"id": "a", "conversations": _conv("<img>cut.png</img>q", "a")}], ["sample 'a': turn 0:", "cut.png: cannot decode"]),
    ("enormous_image", "d.json", [{"id": "a", "conversations": _conv("<img>bomb.png</img>q", "a")}], ["sample 'a': turn 0:", "decompression bomb"]),
    ("url_404", "d.json", [{"id": "a", "conversations": _conv("<img>{server}/x.png</img>q", "a")}], ["sample 'a': turn 0:", "/x.png: HTTP 404"]),
    # conversation shape: alternating user/assistant after an optional system turn, user first, assistant last
    ("starts_with_assistant", "d.json", [{"id": "a", "conversations": _conv("hello", "q", "a", roles=("assistant", "user"))}], ["sample 'a': turn 0: the conversation starts with an assistant turn"]),
    ("starts_with_assistant_after_system", "d.json", [{"id": "a", "conversations": [{"from": "system", "value": "s"}] + _conv("hello", "q", "a", roles=("assistant", "user"))}], ["sample 'a': turn 1: the conversation starts with an assistant turn"]),
    ("two_user_turns", "d.json", [{"id": "a", "conversations": _conv("q", "q2", "a", roles=("user", "user", "assistant"))}], ["sample 'a': turn 1: two user turns in a row"]),
    ("two_assistant_turns", "d.json", [{"id": "a", "conversations": _conv("q", "a", "a2", roles=("user", "assistant", "assistant"))}], ["sample 'a': turn 2: two assistant turns in a row"]),
    ("ends_with_user", "d.json", [{"id": "a", "conversations": _conv("q", "a", "q2")}], ["sample 'a': turn 2: the conversation ends with a user turn"]),
    ("empty_value", "d.json", [{"id": "a", "conversations": _conv("", "a")}], ["sample 'a': turn 0: empty value"]),
    ("blank_value", "d.json", [{"id": "a", "conversations": _conv("q", " \n ")}], ["sample 'a': turn 1: empty value"]),
    ("empty_system", "d.json", [{"id": "a", "conversations": [{"from": "system", "value": ""}] + _conv("q", "a")}], ["sample 'a': turn 0: empty value"]),
    ("image_in_assistant", "d.json", [{"id": "a", "conversations": _conv("q", "Here: <img>good.png</img>")}], ["sample 'a': turn 1: an image in an assistant turn"]),
    ("markup_in_system", "d.json", [{"id": "a", "conversations": [{"from": "system", "value": "See <img>good.png</img>"}] + _conv("q", "a")}], ["sample 'a': turn 0: markup in the system turn (<img> at character 4)"]),
    ("role_with_spaces", "d.json", [{"id": "a", "conversations": _conv("q", "a", roles=("user ", "assistant"))}], ["sample 'a': turn 0: unknown role 'user ' (no spaces around a role)"]),
    # box coordinates: ASCII digits only, no line break
    ("box_plus_sign", "d.json", [{"id": "a", "conversations": _conv("q", "<ref>x</ref><box>(+1,2),(3,4)</box>")}], ["turn 1: <box>(+1,2),(3,4)</box>: coordinate '+1' is not an integer (ASCII digits 0-9 only)"]),
    ("box_fullwidth_digits", "d.json", [{"id": "a", "conversations": _conv("q", "<ref>x</ref><box>(\uff11,2),(3,4)</box>")}], ["turn 1:", "coordinate '\uff11' is not an integer"]),
    ("box_arabic_indic_digits", "d.json", [{"id": "a", "conversations": _conv("q", "<ref>x</ref><box>(1,2),(3,\u0664)</box>")}], ["turn 1:", "coordinate '\u0664' is not an integer"]),
    ("box_line_break", "d.json", [{"id": "a", "conversations": _conv("q", "<ref>x</ref><box>(1,2),\n(3,4)</box>")}], ["turn 1: <box>(1,2),\\n(3,4)</box>: a line break inside <box>"]),
    ("quad_tab", "d.json", [{"id": "a", "conversations": _conv("q", "<ref>x</ref><quad>(1,2),\t(3,4),(5,6),(7,8)</quad>")}], ["turn 1:", "'\\t' inside <quad>"]),
]  # fmt: skip


WHOLE_FILE = {"bad_json", "bad_json_multiline", "empty_list"}  # errors that cost the whole file
GOOD_LINE_KEPT = {"bad_jsonl_line", "deep_nesting_jsonl", "huge_int_jsonl"}  # JSON Lines with a good line "a"


def _write_case(folder: Path, file_name: str, content, server: str) -> Path:
    (folder / "folder").mkdir()
    (folder / "text.png").write_text("not an image")
    Image.new("RGB", (4, 4), (10, 200, 10)).save(folder / "good.png")
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "PNG")
    (folder / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    header_only_png(folder / "bomb.png", 100_000, 100_000)
    text = content if isinstance(content, str) else json.dumps(content, indent=None)
    path = folder / file_name
    path.write_text(text.replace("{server}", server), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "file_name", "content", "expected"), MALFORMED, ids=[c[0] for c in MALFORMED]
)
def test_malformed_input_is_reported_with_the_sample(
    tok, model_dir, tmp_path, server, name, file_name, content, expected
):
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"id": "fine", "conversations": _conv("q", "a")}]))
    data = _write_case(tmp_path, file_name, content, server)
    code, report = run_check([good, data], model_dir, tok, image_timeout=5)
    assert code == 1, report
    error_lines = [line.strip() for line in report.split("\nerrors: ")[1].splitlines()[1:]]
    assert len(error_lines) == 1, error_lines
    line = error_lines[0]
    assert line.startswith(str(data)), line
    for part in expected:
        assert part in line, line
    # training reads the same data the same way: it refuses it with the same line ...
    with pytest.raises(DataValidationError) as info:
        ConversationDataset.from_files(
            [good, data], tok, n_queries=16, image_size=56, verify_images="full", image_timeout=5
        )
    assert line in str(info.value)
    # ... or, when asked, skips the bad part, keeps the good sample and says so
    ds = ConversationDataset.from_files(
        [good, data], tok, n_queries=16, image_size=56, verify_images="full", image_timeout=5, on_error="skip"
    )
    kept = ["fine", "a"] if name in GOOD_LINE_KEPT else ["fine"]  # the JSONL file's good line is kept
    assert [it.id for it in ds.items] == kept and len(ds.summary.errors) == 1
    expected_counts = (0, 1) if name in WHOLE_FILE else (1, 0)
    assert (ds.summary.skipped, ds.summary.unreadable_files) == expected_counts


def test_missing_data_file_and_unusable_model_dir(tok, model_dir, tmp_path):
    code, report = run_check([tmp_path / "absent.json"], model_dir, tok)
    assert code == 1 and "absent.json: no such file" in report
    code, report = run_check([DEMO], tmp_path / "no-model", tok)
    assert code == 2 and "cannot use model directory" in report


def test_cli_check_data(tiny_model_dir, tmp_path, capsys):
    from qwenvl_train.cli import main

    assert (
        main(
            [
                "check-data",
                str(DEMO),
                "--model",
                str(tiny_model_dir),
                "--model_max_length",
                "64",
                "--show",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "samples: 8 read, 8 ok" in out and "over max length 64:" in out and "[[" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "x", "conversations": [{"from": "user", "value": "<ref>q"}, {"from": "gpt", "value": "a"}]}\n'
    )
    assert main(["check-data", str(bad), "--model", str(tiny_model_dir)]) == 1
    assert "sample 'x': turn 0: <ref> at character 0 is never closed" in capsys.readouterr().out
