"""``model.chat``'s prompt against the original's rules as the spec writes them, built here independently: the ids
of each block from the spec's special ids and ``encode_text`` of each plain-text piece, never from make_context."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from inference_fixtures import write_image
from qwenvl_train.data.images import image_tensor
from qwenvl_train.format.markup import PromptError
from qwenvl_train.format.render import encode_markup, make_context

# The spec's ids.
IM_START, IM_END, NL = 151644, 151645, [198]
SYSTEM, USER, ASSISTANT = [8948], [872], [77091]
REF, REF_END, BOX, BOX_END, QUAD, QUAD_END = 151851, 151852, 151853, 151854, 151855, 151856
IMG, IMG_END, IMG_PAD = 151857, 151858, 151859
TAG_IDS = {
    "<ref>": REF,
    "</ref>": REF_END,
    "<box>": BOX,
    "</box>": BOX_END,
    "<quad>": QUAD,
    "</quad>": QUAD_END,
}
N_QUERIES = 16  # the tiny model's


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def content(tok, pieces: list[tuple[str, str]]) -> tuple[str, list[int], list[str]]:
    """(text, ids, images) of a message written as pieces: ("text", s), ("img", path) or ("tag", "<ref>")."""
    text, ids, images = "", [], []
    for kind, value in pieces:
        if kind == "text":
            text, ids = text + value, ids + tok.encode_text(value)
        elif kind == "img":
            text += f"<img>{value}</img>"
            ids += [IMG] + [IMG_PAD] * N_QUERIES + [IMG_END]
            images.append(value)
        else:
            text, ids = text + value, ids + [TAG_IDS[value]]
    return text, ids, images


def system_ids(tok, system: str) -> list[int]:
    return [IM_START] + SYSTEM + NL + tok.encode_text(system) + [IM_END]


def pair_ids(q_ids: list[int], r_ids: list[int]) -> list[int]:
    return (
        NL + [IM_START] + USER + NL + q_ids + [IM_END] + NL + [IM_START] + ASSISTANT + NL + r_ids + [IM_END]
    )


def spec_prompt(
    tok, system: str, history, query_ids: list[int], max_window_size: int
) -> tuple[list[int], int]:
    """The spec's make_context: (ids, number of history pairs kept). history: [(q_ids, r_ids)] oldest first."""
    kept: list[int] = []
    n_kept = 0
    for q_ids, r_ids in reversed(history):
        pair = pair_ids(q_ids, r_ids)
        if not len(system_ids(tok, system)) + len(pair) + len(kept) < max_window_size:
            break
        kept, n_kept = pair + kept, n_kept + 1
    tail = NL + [IM_START] + USER + NL + query_ids + [IM_END] + NL + [IM_START] + ASSISTANT + NL
    return system_ids(tok, system) + kept + tail, n_kept


@pytest.fixture
def conversation(tmp_path: Path, tok, monkeypatch: pytest.MonkeyPatch):
    """Three history pairs and a query, with images in turns 1, 2 and the query; one image path is relative
    (to the current directory, here tmp_path)."""
    monkeypatch.chdir(tmp_path)
    red = write_image(tmp_path / "red.png", colour=(220, 20, 20))
    write_image(tmp_path / "pics" / "green.png", colour=(20, 200, 20))
    blue = write_image(tmp_path / "blue.png", (40, 90), colour=(20, 20, 220))
    messages = [
        ([("text", "Picture 1: "), ("img", str(red)), ("text", "\nWhat colour is this?")], [("text", "Red.")]),
        (
            [("text", "Picture 2: "), ("img", "pics/green.png"), ("text", "\nWhere is the "), ("tag", "<ref>"),
             ("text", "square"), ("tag", "</ref>"), ("text", "?")],
            [("tag", "<ref>"), ("text", "the square"), ("tag", "</ref>"), ("tag", "<box>"), ("text", "(10,20),(300,400)"),
             ("tag", "</box>")],
        ),
        ([("text", "And in 中文? <|im_start|> stays text")], [("text", "好的。 ")]),
    ]  # fmt: skip
    query = [("text", "Picture 3: "), ("img", str(blue)), ("text", "\nCompare them.")]
    return messages, query


def test_chat_ids_follow_the_spec_with_history_images_and_window(
    tok, model, conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages, query_pieces = conversation
    history_text, history_ids, history_images = [], [], []
    for q, r in messages:
        (q_text, q_ids, q_images), (r_text, r_ids, r_images) = content(tok, q), content(tok, r)
        history_text.append((q_text, r_text))
        history_ids.append((q_ids, r_ids))
        history_images.append(q_images + r_images)
    query, query_ids, query_images = content(tok, query_pieces)
    system = "You are a helpful assistant."

    seen: list[dict] = []
    generate = model.generate

    def spy(**kwargs):
        seen.append(kwargs)
        return generate(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    pairs = [len(pair_ids(q, r)) for q, r in history_ids]
    everything = len(system_ids(tok, system)) + sum(pairs)
    # Kept while system + pair + kept < window: all three, then the oldest dropped, then only the newest.
    for window, kept in ((everything + 1, 3), (everything, 2), (everything - pairs[0], 1)):
        expected, n_kept = spec_prompt(tok, system, history_ids, query_ids, window)
        assert n_kept == kept
        response, new_history = model.chat(
            tok, query, history=history_text, max_window_size=window, do_sample=False, max_new_tokens=2
        )
        assert seen[-1]["input_ids"].tolist() == [expected]
        assert seen[-1]["attention_mask"].tolist() == [[1] * len(expected)]
        images = [img for pair in history_images[3 - kept :] for img in pair] + query_images
        pixels = seen[-1]["pixel_values"]
        assert pixels.shape[0] == len(images)
        for k, ref in enumerate(images):
            assert torch.equal(pixels[k], image_tensor(str(Path(ref).resolve()), 56)), ref
        assert new_history == history_text + [(query, response)]
    # The history passed in is not modified; append_history=False leaves it out.
    _, same = model.chat(
        tok, query, history=history_text, append_history=False, do_sample=False, max_new_tokens=1
    )
    assert same == history_text and len(history_text) == 3


def test_make_context_without_history_and_default_system(tok) -> None:
    context = make_context(tok, "Hi", n_queries=N_QUERIES)
    expected, _ = spec_prompt(tok, "You are a helpful assistant.", [], tok.encode_text("Hi"), 6144)
    assert context.input_ids == expected and context.images == [] and context.kept_pairs == 0


def test_markup_is_encoded_as_the_original_even_when_unbalanced(tok) -> None:
    ids, images = encode_markup(tok, "a</box><ref>b<quad>", N_QUERIES)
    assert ids == tok.encode_text("a") + [BOX_END, REF] + tok.encode_text("b") + [QUAD]
    assert images == []
    ids, images = encode_markup(tok, "<img>x.png</img><imgpad>", N_QUERIES)
    assert ids == [IMG] + [IMG_PAD] * N_QUERIES + [IMG_END] + tok.encode_text("<imgpad>")
    assert images == ["x.png"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("look <img>a.png", "<img> at character 5 is never closed"),
        ("a.png</img>", "</img> at character 5 without"),
    ],
)
def test_bad_image_markup_is_one_clear_error(tok, text: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        encode_markup(tok, text, N_QUERIES)
