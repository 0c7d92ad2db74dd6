"""An assistant turn marked ``"train": false`` (OpenAI's ``weight: 0``) is context: its ids are rendered as usual,
none of its block is labelled under either policy, no cut point is placed at its end, and a sample whose every
assistant turn is so marked is refused; the reader checks the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenvl_train.data.engine.records import sample_from_object
from qwenvl_train.format.render import IGNORE_INDEX, RenderError, render_conversation
from qwenvl_train.format.rules import check_shape
from qwenvl_train.format.sample import Turn
from qwenvl_train.tokenizer import QwenVLTokenizer

IM_START, IM_END, NL = 151644, 151645, 198
IGN = IGNORE_INDEX


@pytest.fixture(scope="module")
def tok(vocab_file) -> QwenVLTokenizer:
    return QwenVLTokenizer(vocab_file=str(vocab_file))


def block(tok: QwenVLTokenizer, role: str, text: str) -> list[int]:
    return [IM_START, *tok.encode_text(role), NL, *tok.encode_text(text), IM_END, NL]


TURNS = [("user", "Hi"), ("assistant", "No"), ("user", "Again"), ("assistant", "Yes")]


def turns(untrained: int | None) -> list[Turn]:
    return [Turn(role, text, i, trained=i != untrained) for i, (role, text) in enumerate(TURNS)]


def test_untrained_turn_has_no_label_and_no_cut_point(tok) -> None:
    blocks = [block(tok, "system", "You are a helpful assistant.")] + [block(tok, r, t) for r, t in TURNS]
    ids = [i for b in blocks for i in b]
    starts = [sum(map(len, blocks[:k])) for k in range(len(blocks) + 1)]

    def answer_labels(k: int) -> list[int]:
        """The labels of block ``k`` (an assistant turn) under ``assistant``: its content and <|im_end|>."""
        b = blocks[k]
        content = len(b) - 2 - len(tok.encode_text(TURNS[k - 1][1]))
        return [IGN] * content + b[content:-1] + [IGN]

    every = render_conversation(turns(None), tok)
    context = render_conversation(turns(1), tok)
    assert every.input_ids == context.input_ids == ids
    ignored_before = [IGN] * starts[2]
    assert every.labels == ignored_before + answer_labels(2) + [IGN] * len(blocks[3]) + answer_labels(4)
    assert context.labels == ignored_before + [IGN] * (len(blocks[2]) + len(blocks[3])) + answer_labels(4)
    trained_at = [i for i, label in enumerate(context.labels) if label != IGN]
    assert trained_at == list(range(starts[4] + 3, starts[5] - 1))  # "Yes" and its <|im_end|>
    assert [cp.length for cp in every.cut_points] == [starts[3], starts[5]]
    assert [cp.length for cp in context.cut_points] == [starts[5]]

    reference = render_conversation(turns(1), tok, policy="reference")
    b = starts[2]  # the untrained block: not even <|im_start|>, <|im_end|> and the "\n" after it
    assert reference.labels[b : starts[3]] == [IGN] * len(blocks[2])
    assert reference.labels[starts[3]] == IM_START and reference.labels[starts[4] - 2 : starts[4]] == [
        IM_END,
        NL,
    ]


def test_every_answer_untrained_is_refused(tok) -> None:
    only = [Turn("user", "Hi", 0), Turn("assistant", "No", 1, trained=False)]
    with pytest.raises(
        RenderError, match='every assistant turn is marked "train": false: nothing to train on'
    ):
        render_conversation(only, tok)


@pytest.mark.parametrize(
    ("turn", "error"),
    [
        ({"from": "gpt", "value": "x", "train": "no"}, "'train' is a str, expected true or false"),
        ({"from": "human", "value": "x", "train": False}, "'train': false on a 'human' turn: only assistant turns are trained"),
    ],
)  # fmt: skip
def test_reader_checks_the_field(turn, error) -> None:
    sample = sample_from_object({"conversations": [turn]}, Path("d.jsonl"), 0, 1)
    assert [str(p) for p in sample.errors] == [f"d.jsonl:1: sample '#0': turn 0: {error}"]


def test_reader_and_rules() -> None:
    conversations = [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b", "train": False}]
    sample = sample_from_object({"conversations": conversations}, Path("d.jsonl"), 0, 1)
    assert sample.errors == [] and [t.trained for t in sample.turns] == [True, False]
    assert [str(p) for p in check_shape(sample, "assistant").errors] == [
        "d.jsonl:1: sample '#0': every assistant turn is marked \"train\": false: nothing to train on"
    ]
    conversations.append({"from": "human", "value": "c"})
    conversations.append({"from": "gpt", "value": "d", "train": True})
    sample = sample_from_object({"conversations": conversations}, Path("d.jsonl"), 0, 1)
    assert check_shape(sample, "assistant").errors == []
