"""The one scan, stage by stage without a Dataset; every problem of a sample; duplicate ids; the reference
policy's dropped turn; files whose content is the other JSON format; options through check-data."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_fixtures import header_only_png
from qwenvl_train.data import ConversationDataset, DataOptions, DataValidationError, scan
from qwenvl_train.data.check import check_data
from qwenvl_train.data.engine.samples import scan_sample
from qwenvl_train.format.render import IGNORE_INDEX, render_conversation
from qwenvl_train.format.sample import Sample, Turn
from qwenvl_train.tokenizer import QwenVLTokenizer
from scan_fixtures import assemble, check_images, read_file

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo.json"
NQ = 16


@pytest.fixture(scope="module")
def tok(vocab_file) -> QwenVLTokenizer:
    return QwenVLTokenizer(vocab_file=str(vocab_file))


def run_check(paths, model_dir, tok, **kwargs) -> tuple[int, str]:
    out = io.StringIO()
    code = check_data([str(p) for p in paths], model_dir, out=out, tokenizer=tok, **kwargs)
    return code, out.getvalue()


def error_lines(report: str) -> list[str]:
    return [line.strip() for line in report.split("\nerrors: ")[1].splitlines()[1:] if line.startswith("  ")]


def turns(*pairs: tuple[str, str]) -> list[dict]:
    return [{"from": role, "value": value} for role, value in pairs]


def write(path: Path, samples) -> Path:
    path.write_text(json.dumps(samples, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------- each stage on its own
def test_stages_without_a_dataset(tok, tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    data = write(
        tmp_path / "d.json",
        [
            {"id": "ok", "conversations": turns(("user", "<img>a.png</img>hi"), ("assistant", "hello"))},
            {"id": "gone", "conversations": turns(("user", "<img>b.png</img>hi"), ("assistant", "hello"))},
        ],
    )
    contents = read_file(data)  # stage 1: records, structure only
    assert [(s.id, s.line, s.errors) for s in contents.samples] == [("ok", 2, []), ("gone", 15, [])]
    options = DataOptions()
    ok, gone = (scan_sample(raw, tok, options, NQ) for raw in contents.samples)  # stage 2: one sample each
    expected = render_conversation(contents.samples[0].turns, tok, n_queries=NQ)
    assert ok.input_ids.tolist() == expected.input_ids and ok.input_ids.dtype == np.int32
    assert ok.trained.tolist() == [label != IGNORE_INDEX for label in expected.labels]
    assert ok.image_refs == [str(tmp_path / "a.png")] and ok.errors == []
    assert gone.image_refs == [str(tmp_path / "b.png")] and gone.errors == []  # images are stage 3's job
    status = check_images(ok.image_refs + gone.image_refs + ok.image_refs, options)  # stage 3: each once
    assert list(status) == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert (
        status[str(tmp_path / "a.png")] is None and "b.png: no such file" in status[str(tmp_path / "b.png")]
    )
    result = assemble([str(data)], [], [], [ok, gone], status, options, NQ)  # stage 4
    assert result.items.ids == ["ok"] and result.summary.skipped == 1
    assert [str(e) for e in result.summary.errors] == [
        f"{data}:15: sample 'gone': turn 0: {tmp_path / 'b.png'}: no such file"
    ]


def test_items_are_the_rendered_samples_packed_flat(tok):
    result = scan(DEMO, tok, n_queries=NQ)
    raws = read_file(DEMO).samples
    assert len(result.items) == len(raws) == 8
    assert result.items.offsets[-1] == len(result.items.input_ids) == len(result.items.trained)
    for raw, item in zip(raws, result.items, strict=True):
        rendered = render_conversation(raw.turns, tok, system=raw.system, n_queries=NQ)
        assert item.id == raw.id and item.line == raw.line and item.file == str(DEMO)
        assert item.input_ids.tolist() == rendered.input_ids
        assert item.labels.tolist() == rendered.labels
        assert item.images == [str(DEMO.parent / ref) for ref in rendered.images]
        assert item.image_turns == rendered.image_turns
    assert result.items.lengths.tolist() == result.lengths.tolist()  # nothing truncated at 2048


# ---------------------------------------------------------------- every problem of a sample
def test_every_problem_of_a_sample_is_reported(tok, model_dir, tmp_path):
    data = write(
        tmp_path / "d.json",
        [
            # a bad box must not hide the missing image of the same sample
            {"id": "box_and_image", "conversations": turns(("user", "<img>nope.png</img>Where?"),
                                                           ("assistant", "<ref>x</ref><box>(5,5),(1,1)</box>"))},
            # a structural error in one turn, bad markup in another, the shape broken too
            {"id": "three", "conversations": turns(("user", "<ref>dog"), ("assistant", 5), ("user", "q"))},
            # two bad turns, each reported
            {"id": "two_turns", "conversations": turns(("user", "<ref>a"), ("assistant", "b</box>"))},
            # a shape error next to an image error and an empty value
            {"id": "shape", "conversations": turns(("assistant", "hi"), ("user", "<img>nope.png</img>"), ("assistant", " "))},
        ],
    )  # fmt: skip
    code, report = run_check([data], model_dir, tok)
    assert code == 1
    nope = tmp_path / "nope.png"
    assert error_lines(report) == [
        f"{data}:2: sample 'box_and_image': turn 1: <box>(5,5),(1,1)</box>: inverted corners (need x1 <= x2 and y1 <= y2)",
        f"{data}:2: sample 'box_and_image': turn 0: {nope}: no such file",
        f"{data}:15: sample 'three': turn 1: 'value' is a int, expected a string",
        f"{data}:15: sample 'three': turn 0: <ref> at character 0 is never closed",
        f"{data}:32: sample 'two_turns': turn 0: <ref> at character 0 is never closed",
        f"{data}:32: sample 'two_turns': turn 1: </box> at character 1 without an opening <box>",
        f"{data}:45: sample 'shape': turn 0: the conversation starts with an assistant turn: the first turn must be from the user",
        f"{data}:45: sample 'shape': turn 2: empty value",
        f"{data}:45: sample 'shape': turn 1: {nope}: no such file",
    ]  # fmt: skip
    assert "samples: 4 read, 0 ok, 4 with errors" in report
    with pytest.raises(DataValidationError) as info:  # training refuses the data with the same lines
        ConversationDataset.from_files(data, tok, n_queries=NQ, image_size=56)
    assert all(line in str(info.value) for line in error_lines(report)) and "9 error(s)" in str(info.value)


# ---------------------------------------------------------------- changes to the data, reported
def test_reference_policy_dropped_turn_is_counted_and_reported(tok, model_dir, tmp_path):
    data = write(
        tmp_path / "d.json",
        [
            {"id": "greeting", "conversations": turns(("assistant", "Welcome!"), ("user", "hi"), ("assistant", "hello"))},
            {"id": "plain", "conversations": turns(("user", "hi"), ("assistant", "hello"))},
        ],
    )  # fmt: skip
    code, report = run_check([data], model_dir, tok, label_policy="reference")
    assert code == 0, report
    assert "reference policy: 1 leading assistant turns dropped, as the original did" in report
    assert "turns: 4 user/assistant" in report  # the dropped turn is not trained on
    result = scan(data, tok, DataOptions(label_policy="reference"), n_queries=NQ)
    assert result.summary.dropped_first_turns == 1 and result.items.ids == ["greeting", "plain"]
    assert "1 leading assistant turns dropped (reference policy)" in str(result.summary)
    assert tok.encode_text("Welcome!")[0] not in result.items[0].input_ids.tolist()
    code, report = run_check([data], model_dir, tok)  # the assistant policy keeps every turn: a shape error
    assert code == 1 and "sample 'greeting': turn 0: the conversation starts with an assistant turn" in report


def test_duplicate_ids_are_counted_and_listed_not_errors(tok, model_dir, tmp_path):
    a = write(tmp_path / "a.json", [{"id": "x", "conversations": turns(("user", "q"), ("assistant", "a"))},
                                    {"id": 7, "conversations": turns(("user", "q"), ("assistant", "a"))},
                                    {"conversations": turns(("user", "q"), ("assistant", "a"))}])  # fmt: skip
    b = tmp_path / "b.jsonl"
    b.write_text(
        "\n".join(
            json.dumps(s)
            for s in [
                {"id": "7", "conversations": turns(("user", "q"), ("assistant", "a"))},
                {
                    "conversations": turns(("user", "q"), ("assistant", "a"))
                },  # '#1' here, '#2' in a.json: no id
                {"id": "x", "conversations": turns(("user", "q"), ("assistant", "a"))},
            ]
        )
    )
    code, report = run_check([a, b], model_dir, tok)
    assert code == 0, report
    assert "duplicate ids: 2 samples reuse an earlier sample's id (not an error), e.g." in report
    assert f"'7' at {b}:1, first at {a}:15" in report and f"'x' at {b}:3, first at {a}:2" in report
    result = scan([a, b], tok, n_queries=NQ)
    assert result.summary.duplicate_ids == 2 and len(result.items) == 6
    assert "2 duplicate ids" in str(result.summary)
    code, report = run_check([a], model_dir, tok)
    assert "duplicate ids: none" in report


@pytest.mark.parametrize(
    ("name", "text", "note"),
    [
        ("list.jsonl", None, "holds one JSON list, not JSON Lines; read as JSON"),
        ("pretty.jsonl", None, "holds JSON written over several lines per sample, not JSON Lines"),
        ("lines.json", None, "holds JSON Lines, not a JSON list; read as JSON Lines"),
    ],
)
def test_a_file_in_the_other_json_format_is_read_for_what_it_is(tok, model_dir, tmp_path, name, text, note):
    samples = [
        {"id": f"s{i}", "conversations": turns(("user", f"q{i}"), ("assistant", "a"))} for i in range(3)
    ]
    if name == "list.jsonl":
        text = json.dumps(samples, indent=2)
    elif name == "pretty.jsonl":
        text = "\n".join(json.dumps(s, indent=2) for s in samples)
    else:
        text = "\n".join(json.dumps(s) for s in samples)
    (tmp_path / name).write_text(text)
    code, report = run_check([tmp_path / name], model_dir, tok)
    assert code == 0, report
    assert f"note: {tmp_path / name}: {note}" in report and "samples: 3 read, 3 ok" in report
    result = scan(tmp_path / name, tok, n_queries=NQ)
    assert result.items.ids == ["s0", "s1", "s2"] and len(result.summary.notes) == 1
    first_lines = {"list.jsonl": [2, 15, 28], "pretty.jsonl": [1, 14, 27], "lines.json": [1, 2, 3]}[name]
    assert [item.line for item in result.items] == first_lines


def test_json_lines_with_a_bad_first_line_are_still_json_lines(tok, model_dir, tmp_path):
    good = json.dumps({"id": "b", "conversations": turns(("user", "q"), ("assistant", "a"))})
    (tmp_path / "d.jsonl").write_text('{"id": "a", oops}\n' + good + "\n")
    code, report = run_check([tmp_path / "d.jsonl"], model_dir, tok, on_error="skip")
    assert code == 0 and "note:" not in report
    assert error_lines(report) == [
        f"{tmp_path / 'd.jsonl'}:1:13: bad JSON: Expecting property name enclosed in double quotes"
    ]
    assert "samples: 2 read, 1 ok, 1 with errors" in report
    assert "with --on_error skip, training skips these 1 samples" in report


# ---------------------------------------------------------------- options, as training takes them
def test_max_image_pixels_raises_the_limit(tok, model_dir, tmp_path):
    header_only_png(tmp_path / "big.png", 10_000, 10_000)  # 1e8 pixels, above Pillow's default limit
    data = write(
        tmp_path / "d.json",
        [{"id": "a", "conversations": turns(("user", "<img>big.png</img>"), ("assistant", "a"))}],
    )
    code, report = run_check([data], model_dir, tok, verify_images="header")
    assert code == 1 and "decompression bomb" in report
    code, report = run_check([data], model_dir, tok, verify_images="header", max_image_pixels=10**8)
    assert code == 0, report
    assert "images: 1 (1 distinct), check: header" in report


def test_on_error_skip_exit_status(tok, model_dir, tmp_path):
    bad = {"id": "bad", "conversations": turns(("user", "<ref>q"), ("assistant", "a"))}
    good = {"id": "good", "conversations": turns(("user", "q"), ("assistant", "a"))}
    assert run_check([write(tmp_path / "a.json", [bad, good])], model_dir, tok, on_error="skip")[0] == 0
    code, report = run_check([write(tmp_path / "b.json", [bad])], model_dir, tok, on_error="skip")
    assert code == 1 and "no sample left to train on" in report


def test_truncation_option_is_what_training_does(tok, model_dir, tmp_path):
    long = {
        "id": "long",
        "conversations": turns(("user", "q"), ("assistant", "a"), ("user", "word " * 60), ("assistant", "b")),
    }
    data = write(tmp_path / "d.json", [long])  # fmt: skip
    code, report = run_check(
        [data], model_dir, tok, model_max_length=40, truncation="cut_turns", dump=tmp_path / "o.jsonl"
    )
    assert code == 0, report
    assert (
        "over max length 40: 1 samples (truncation cut_turns: 0 dropped, 1 cut at a turn boundary, 2 turns removed)"
        in report
    )
    dumped = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    ds = ConversationDataset.from_files(data, tok, n_queries=NQ, model_max_length=40, truncation="cut_turns")
    assert dumped[0]["input_ids"] == ds[0]["input_ids"].tolist() and len(dumped[0]["input_ids"]) <= 40
    assert dumped[0]["labels"] == ds[0]["labels"].tolist()
    assert f"training gets: 1 samples, {len(dumped[0]['input_ids'])} tokens" in report


def test_samples_in_a_file_without_turns_are_sample_errors_not_crashes(tok):
    raw = Sample("x", [Turn("user", "q", 0)], None, Path("d.json"), 3)
    sample = scan_sample(raw, tok, DataOptions(), NQ)
    assert [str(e) for e in sample.errors] == ["d.json:3: sample 'x': no assistant turn: nothing to train on"]
    assert sample.input_ids is None


# ---------------------------------------------------------------- an oversized sample costs about its own size
class CountingTokenizer:
    """The real tokenizer, recording the longest text it turned into a list of ids."""

    def __init__(self, tok: QwenVLTokenizer) -> None:
        self.tok, self.longest_encoded = tok, 0

    def encode_text(self, text: str) -> list[int]:
        self.longest_encoded = max(self.longest_encoded, len(text))
        return self.tok.encode_text(text)

    def count_text(self, text: str) -> int:
        return self.tok.count_text(text)


@pytest.mark.parametrize("truncation", ["drop", "cut_turns"])
def test_an_oversized_sample_is_measured_not_kept_whole(tok, truncation):
    long = "word " * 40_000  # 200,000 characters: counted, never turned into a list of ids
    pairs = [Turn("user", "short question", 0), Turn("assistant", "short answer", 1)]
    pairs += [Turn("user", long, 2), Turn("assistant", "end", 3)]
    raw = Sample("big", pairs, None, Path("d.json"), 1)
    options = DataOptions(model_max_length=100, truncation=truncation)
    counting = CountingTokenizer(tok)
    got = scan_sample(raw, counting, options, n_queries=16)
    assert counting.longest_encoded < len(long)
    full = scan_sample(
        raw, tok, DataOptions(model_max_length=10**9), n_queries=16
    )  # everything kept: the truth
    assert got.length == full.length == len(full.input_ids) and got.too_long
    if truncation == "drop":
        assert got.input_ids is None and not got.cut
    else:  # the first exchange, exactly as cutting the whole rendering gives it
        assert got.cut and got.turns_removed == 2
        first = scan_sample(Sample("big", pairs[:2], None, Path("d.json"), 1), tok, options, n_queries=16)
        assert (
            got.input_ids.tolist()
            == first.input_ids.tolist()
            == full.input_ids[: len(first.input_ids)].tolist()
        )
        assert got.trained.tolist() == first.trained.tolist()
