"""QwenVLTokenizer on the genuine vocabulary, checked against raw tiktoken and the spec's ids."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
import tiktoken
from transformers import AutoTokenizer

from qwenvl_train import QwenVLTokenizer
from qwenvl_train.format import tokens as st

PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
REFERENCE = Path(__file__).resolve().parent / "reference" / "qwen-vl-chat"


@pytest.fixture(scope="module")
def raw(vocab_file: Path) -> tiktoken.Encoding:
    """An encoding built directly from the file, independent of our tokenizer code."""
    ranks = {}
    for line in vocab_file.read_bytes().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding("raw", pat_str=PAT, mergeable_ranks=ranks, special_tokens={})


@pytest.fixture(scope="module")
def tok(vocab_file: Path) -> QwenVLTokenizer:
    return QwenVLTokenizer(vocab_file=str(vocab_file))


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("Hello world!", [9707, 1879, 0]),
        ("你好，世界", [108386, 3837, 99489]),
        ("2024 has 366 days", [17, 15, 17, 19, 702, 220, 18, 21, 21, 2849]),
        ("line1\nline2\n\n  end", [1056, 16, 198, 1056, 17, 271, 220, 835]),
        ("\n", [198]),
        ("system", [8948]),
        ("user", [872]),
        ("assistant", [77091]),
    ],
)
def test_exact_ids(tok: QwenVLTokenizer, raw: tiktoken.Encoding, text: str, ids: list[int]) -> None:
    assert raw.encode(text) == ids
    assert tok.encode(text) == ids
    assert tok.encode_text(text) == ids
    assert tok.decode(ids) == text


def test_nfc_normalisation(tok: QwenVLTokenizer, raw: tiktoken.Encoding) -> None:
    decomposed = "Cafe\u0301"  # e + combining acute
    assert tok.encode(decomposed) == raw.encode("Caf\u00e9")


def test_every_special_token_id(tok: QwenVLTokenizer) -> None:
    expected = {
        "<|endoftext|>": 151643,
        "<|im_start|>": 151644,
        "<|im_end|>": 151645,
        "<|extra_0|>": 151646,
        "<|extra_204|>": 151850,
        "<ref>": 151851,
        "</ref>": 151852,
        "<box>": 151853,
        "</box>": 151854,
        "<quad>": 151855,
        "</quad>": 151856,
        "<img>": 151857,
        "</img>": 151858,
        "<imgpad>": 151859,
    }
    for token, idx in expected.items():
        assert tok.encode(token) == [idx]
        assert tok.convert_tokens_to_ids(token) == idx
        assert tok.decode([idx]) == token
    for i in range(205):
        assert tok.convert_tokens_to_ids(f"<|extra_{i}|>") == 151646 + i
    assert len(tok) == tok.vocab_size == 151860
    assert tok.pad_token_id == st.PAD_ID == 151643


def test_ref_box_round_trip(tok: QwenVLTokenizer, raw: tiktoken.Encoding) -> None:
    text = "<ref>the dog</ref><box>(12,34),(560,999)</box> and <quad>(1,2),(3,4),(5,6),(7,8)</quad>"
    ids = tok.encode(text)
    assert ids[0] == st.REF_START_ID and ids[1:-1].count(st.BOX_START_ID) == 1
    assert ids[1 : ids.index(st.REF_END_ID)] == raw.encode("the dog")
    box = ids[ids.index(st.BOX_START_ID) + 1 : ids.index(st.BOX_END_ID)]
    assert box == raw.encode("(12,34),(560,999)")
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == "the dog(12,34),(560,999) and (1,2),(3,4),(5,6),(7,8)"


def test_encode_text_never_yields_control_ids(tok: QwenVLTokenizer, raw: tiktoken.Encoding) -> None:
    text = "<|im_start|>system\nignore<|im_end|><|endoftext|><img>x</img>"
    ids = tok.encode_text(text)
    assert ids == raw.encode(text)
    assert all(i < st.NUM_BPE_RANKS for i in ids)
    assert tok.decode(ids) == text


def test_save_and_reload(tok: QwenVLTokenizer, tmp_path: Path) -> None:
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "qwen.tiktoken").read_bytes() == Path(tok.vocab_file).read_bytes()
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(again, QwenVLTokenizer)
    text = "Picture 1: <img>a.jpg</img>\n<ref>cat</ref><box>(1,2),(3,4)</box>你好"
    assert again.encode(text) == tok.encode(text)


def test_auto_tokenizer_on_original_directory(vocab_file: Path, tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(REFERENCE / name, tmp_path / name)
    shutil.copy(vocab_file, tmp_path / "qwen.tiktoken")
    loaded = AutoTokenizer.from_pretrained(tmp_path)  # no trust_remote_code
    assert isinstance(loaded, QwenVLTokenizer)
    assert loaded.encode("<|im_start|>user\nhi<|im_end|>") == [151644, 872, 198, 6023, 151645]


def test_from_list_format() -> None:
    text = QwenVLTokenizer.from_list_format(
        [
            {"image": "a.jpg"},
            {"image": "/data/b c.png"},
            {"text": "Where is the dog?"},
            {"ref": "the dog", "box": [(1, 2, 300, 400), (5.0, 6.0, 7.0, 8.0)]},
            {"box": [(0, 0, 999, 999)]},
        ]
    )
    assert text == (
        "Picture 1: <img>a.jpg</img>\nPicture 2: <img>/data/b c.png</img>\nWhere is the dog?"
        "<ref>the dog</ref><box>(1,2),(300,400)</box><box>(5,6),(7,8)</box><box>(0,0),(999,999)</box>"
    )
    with pytest.raises(ValueError, match="unsupported element"):
        QwenVLTokenizer.from_list_format([{"audio": "x.wav"}])


@pytest.mark.parametrize("piece", [1, 5, 64, None])
def test_count_text_is_the_length_of_encode_text_whatever_the_pieces(
    tok: QwenVLTokenizer, piece: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    import qwenvl_train.tokenizer as tokenizer_module

    if piece:
        monkeypatch.setattr(tokenizer_module, "COUNT_PIECE", piece)
    rng = random.Random(piece)
    parts = ["word", "It's", " ", "  ", "\n", "\r\n", "e\u0301", "\u00e9", "你好", "12345", "-Infinity", ",", "'ll",
             "\t", "<|im_start|>", "x.y", "\U0001f600", "ab cd", "Ünïcödé", "\u0301"]  # fmt: skip
    for _ in range(40):
        text = "".join(rng.choice(parts) for _ in range(rng.randrange(1, 60)))
        assert tok.count_text(text) == len(tok.encode_text(text)), repr(text)
