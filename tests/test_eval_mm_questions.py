"""Benchmark questions read from the original eval_mm files, and their prompt ids against the original tokenizer."""

from __future__ import annotations

import base64
import json
import unicodedata
from pathlib import Path

import pytest
import tiktoken

from eval_mm_fixtures import (
    caption_file,
    mme_folder,
    refcoco_file,
    scienceqa_file,
    seed_file,
    vqa_file,
    write_jsonl,
)
from qwenvl_train import QwenVLTokenizer
from qwenvl_train.eval_mm.catalog import BENCHMARKS, get_benchmark
from qwenvl_train.eval_mm.generation import prompt_ids
from qwenvl_train.eval_mm.questions import QuestionError, read_questions
from qwenvl_train.format import tokens as st

#: ``IMG_TOKEN_SPAN`` of the original tokenizer: the positions of one picture.
ORIGINAL_SPAN = 256
PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


@pytest.fixture(scope="module")
def original(vocab_file: Path) -> tiktoken.Encoding:
    """The original ``QWenTokenizer``'s encoding, built from the file as it builds it: the BPE ranks plus the
    special tokens from id 151643 on, every special string allowed in the text."""
    ranks = {}
    for line in vocab_file.read_bytes().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding("Qwen", pat_str=PAT, mergeable_ranks=ranks, special_tokens=dict(st.SPECIAL_IDS))


def original_ids(enc: tiktoken.Encoding, text: str) -> list[int]:
    """``tokenizer(text).input_ids`` of the original: the text encoded with specials allowed, then each
    ``<img>...</img>`` span rewritten as ``<img>`` + the path's bytes + ``<imgpad>`` up to 256 + ``</img>``."""
    ids = enc.encode(unicodedata.normalize("NFC", text), allowed_special="all")
    out: list[int] = []
    i = 0
    while i < len(ids):
        if ids[i] == st.IMG_START_ID:
            end = ids.index(st.IMG_END_ID, i)
            path = enc.decode_bytes(ids[i + 1 : end])
            out += [st.IMG_START_ID, *path, *[st.IMG_PAD_ID] * (ORIGINAL_SPAN - len(path)), st.IMG_END_ID]
            i = end + 1
        else:
            out.append(ids[i])
            i += 1
    return out


def placeholders(ids: list[int]) -> list[int]:
    """Everything inside an image span as ``<imgpad>``: the model overwrites those positions with the picture."""
    out, inside = [], False
    for token in ids:
        if token == st.IMG_END_ID:
            inside = False
        out.append(st.IMG_PAD_ID if inside else token)
        if token == st.IMG_START_ID:
            inside = True
    return out


@pytest.fixture(scope="module")
def tok(vocab_file: Path) -> QwenVLTokenizer:
    return QwenVLTokenizer(vocab_file=str(vocab_file))


FAMILY_FILES = {
    "textvqa_val": vqa_file,
    "docvqa_val": vqa_file,
    "chartqa_test_human": vqa_file,
    "refcoco+_testA": refcoco_file,
    "scienceqa_test_img": scienceqa_file,
    "seed_bench_image": seed_file,
    "nocaps": caption_file,
}


@pytest.mark.parametrize("name", sorted(FAMILY_FILES))
def test_prompt_ids_are_the_original_strings_encoded_by_the_original_tokenizer(
    name: str, tok: QwenVLTokenizer, original: tiktoken.Encoding, tmp_path: Path
) -> None:
    bench = get_benchmark(name)
    data = FAMILY_FILES[name](tmp_path)
    questions, _ = read_questions(bench, data, tmp_path)
    assert questions
    for question in questions:
        ours = prompt_ids(tok, question.prompt, ORIGINAL_SPAN)
        expected = original_ids(original, question.prompt)
        assert len(ours) == len(expected)
        assert ours == placeholders(expected)
        assert ours.count(st.IMG_START_ID) == 1 and st.ENDOFTEXT_ID not in ours


def test_each_family_builds_the_original_prompt_text(tmp_path: Path) -> None:
    vqa, _ = read_questions(get_benchmark("textvqa_val"), vqa_file(tmp_path), tmp_path)
    assert (vqa[0].id, vqa[0].prompt) == (1000, "<img>img0.png</img>What colour is the square? Answer:")
    assert vqa[0].images == [str(tmp_path / "img0.png")]
    ref, _ = read_questions(get_benchmark("refcoco_val"), refcoco_file(tmp_path), tmp_path)
    assert [q.id for q in ref] == [0, 1, 2]
    assert ref[1].prompt == "<img>img1.png</img><ref>left dog</ref><box>"
    sqa, _ = read_questions(get_benchmark("scienceqa_test_img"), scienceqa_file(tmp_path), tmp_path)
    assert (
        sqa[0].prompt
        == "<img>img0.png</img>Context: N/A\nQuestion: Which is red?\nOptions: A. a\nB. b\nAnswer:"
    )
    assert sqa[1].prompt.startswith(
        "<img>img1.png</img>Context: Look closely.\nQuestion: Pick\nOptions: A. x\n"
    )
    assert [q.options for q in sqa] == [("A", "B"), ("A", "B", "C"), ("A", "B", "C", "D", "E")]
    assert sqa[2].prompt.split("Context: ")[1].startswith("N/A\n")  # a null hint too
    seed, _ = read_questions(get_benchmark("seed_bench_image"), seed_file(tmp_path), tmp_path)
    assert seed[0].id == "q0" and seed[0].options == ("A", "B", "C", "D")
    assert seed[0].images == [str(tmp_path / "img0.png")]
    cap, _ = read_questions(get_benchmark("flickr"), caption_file(tmp_path), tmp_path)
    assert [(q.id, q.prompt) for q in cap][2] == (42, "<img>img2.png</img>Describe the image in English:")
    mme, _ = read_questions(get_benchmark("mme"), mme_folder(tmp_path), tmp_path)
    # calculation.py's task order (count before color); ids: the task and the 0-based line of its file.
    assert [q.id for q in mme] == [f"{task}/{i}" for task in ("count", "color") for i in range(4)]
    assert (
        mme[5].prompt == "<img>images/color/img0.png</img>\nIs there a blue square? Please answer yes or no."
    )
    assert mme[5].fields == {
        "task": "color",
        "image": "img0.png",
        "question": "Is there a blue square? Please answer yes or no.",
        "gt_answer": "No",
    }
    assert mme[5].images == [str(tmp_path / "images" / "color" / "img0.png")]


def test_relative_pictures_default_to_the_current_directory(tmp_path: Path, monkeypatch) -> None:
    data = vqa_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    questions, _ = read_questions(get_benchmark("vqav2_val"), data)
    assert questions[0].images == ["img0.png"]


@pytest.mark.parametrize(
    ("name", "row", "message"),
    [
        ("textvqa_val", "{not json", "vqa.jsonl:2: not a JSON object"),
        ("textvqa_val", {"image": "img0.png", "question": "q"}, "vqa.jsonl:2: no 'question_id'"),
        ("textvqa_val", {"image": "gone.png", "question": "q", "question_id": 5}, "vqa.jsonl:2: picture 'gone.png' not found"),
        ("refcoco_val", {"image": "img0.png"}, "vqa.jsonl:2: no 'sent'"),
        ("scienceqa_test_img", {"image": "img0.png", "question": "q", "choices": list("abcdef")}, "vqa.jsonl:2: 'choices' must be 1 to 5 strings"),
        ("seed_bench_image", {"question_id": 1, "prompt": "no picture"}, "vqa.jsonl:2: 'prompt' names no picture"),
    ],
)  # fmt: skip
def test_a_bad_line_is_one_line_naming_file_and_line_or_is_skipped(
    name: str, row: object, message: str, tmp_path: Path
) -> None:
    good = {
        "image": "img0.png",
        "question": "q",
        "question_id": 1,
        "sent": "s",
        "choices": ["a", "b"],
        "prompt": "<img>img0.png</img>Q",
    }
    vqa_file(tmp_path)
    data = tmp_path / "vqa.jsonl"
    data.write_text(json.dumps(good) + "\n" + (row if isinstance(row, str) else json.dumps(row)) + "\n")
    with pytest.raises(QuestionError, match=message) as info:
        read_questions(get_benchmark(name), data, tmp_path)
    assert "\n" not in str(info.value)
    questions, skipped = read_questions(get_benchmark(name), data, tmp_path, on_error="skip")
    assert len(questions) == 1 and len(skipped) == 1 and message in skipped[0]


def test_bad_caption_entry_and_bad_mme_line(tmp_path: Path) -> None:
    data = caption_file(tmp_path)
    content = json.loads(data.read_text())
    content["images"].append({"id": "x7", "image": "img0.png"})
    data.write_text(json.dumps(content))
    with pytest.raises(QuestionError, match=r"captions.json: images\[3\]: 'id' must be an integer"):
        read_questions(get_benchmark("flickr"), data, tmp_path)
    folder = mme_folder(tmp_path)
    with (folder / "count.txt").open("a") as fh:
        fh.write("img0.png\tonly two fields\n")
    with pytest.raises(QuestionError, match=r"count.txt:5: expected image<TAB>question<TAB>answer, got 2"):
        read_questions(get_benchmark("mme"), folder, tmp_path)
    write_jsonl(tmp_path / "empty.jsonl", [])
    assert read_questions(get_benchmark("gqa_testdev"), tmp_path / "empty.jsonl") == ([], [])
    with pytest.raises(QuestionError, match="--data .*missing.jsonl: no such file"):
        read_questions(get_benchmark("gqa_testdev"), tmp_path / "missing.jsonl")


def test_every_benchmark_has_a_reader(tmp_path: Path) -> None:
    for bench in BENCHMARKS.values():
        write_jsonl(tmp_path / "none.jsonl", [])
        if bench.family not in ("caption", "mme"):
            assert read_questions(bench, tmp_path / "none.jsonl") == ([], [])
