"""The Jinja chat template renders the training prompt: through ``tokenizer.apply_chat_template`` its ids equal
``render_conversation``'s for whole conversations and ``make_context``'s with a generation prompt, with text and
pictures, with and without a system message."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenvl_train.format import tokens as st
from qwenvl_train.format.chat_template import chat_template
from qwenvl_train.format.render import make_context, render_conversation
from qwenvl_train.format.sample import Turn

N_QUERIES = 16


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = chat_template(N_QUERIES)
    return tok


def picture(k: int, path: str) -> str:
    return f"Picture {k}: {st.IMG_START}{path}{st.IMG_END}\n"


def as_ids(tokenizer, messages, generation: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=generation, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


CONVERSATIONS = {
    "text": (
        None,
        [("user", "What is a square?"), ("assistant", "A shape with four equal sides.")],
    ),
    "pictures over turns, a system prompt and grounding markup": (
        "Answer with boxes.",
        [
            ("user", [("image", "a.png"), ("text", "Where is the red circle?")]),
            ("assistant", "<ref>the red circle</ref><box>(26,276),(473,723)</box>"),
            ("user", [("image", "b.png"), ("image", "c.png"), ("text", "And <ref>the square</ref> here?")]),
            ("assistant", "<ref>the square</ref><box>(1,2),(300,400)</box>"),
        ],
    ),
    "chinese text and a picture after the text": (
        None,
        [("user", [("text", "图中有什么？"), ("image", "a.png")]), ("assistant", "红色的圆")],
    ),
}


def to_messages(system, turns):
    messages = [{"role": "system", "content": system}] if system is not None else []
    for role, content in turns:
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
        else:
            parts = [
                {"type": "image"} if kind == "image" else {"type": "text", "text": value}
                for kind, value in content
            ]
            messages.append({"role": role, "content": parts})
    return messages


def to_values(turns):
    """The training data's values for the same turns: pictures numbered over the conversation."""
    values, count = [], 0
    for role, content in turns:
        if isinstance(content, str):
            values.append((role, content))
            continue
        text = ""
        for kind, value in content:
            if kind == "image":
                count += 1
                text += picture(count, value)
            else:
                text += value
        values.append((role, text))
    return values


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_conversation_ids_are_the_training_ids(tokenizer, name: str) -> None:
    system, turns = CONVERSATIONS[name]
    values = to_values(turns)
    rendered = render_conversation(
        [Turn(role, value, i) for i, (role, value) in enumerate(values)],
        tokenizer,
        system=system,
        n_queries=N_QUERIES,
    )
    assert as_ids(tokenizer, to_messages(system, turns), generation=False) == rendered.input_ids


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_generation_prompt_ids_are_the_chat_prompt(tokenizer, name: str) -> None:
    system, turns = CONVERSATIONS[name]
    values = to_values(turns)[:-1]  # ends with the user: the answer is to come
    history = [(values[i][1], values[i + 1][1]) for i in range(0, len(values) - 1, 2)]
    context = make_context(
        tokenizer, values[-1][1], history, system or st.DEFAULT_SYSTEM_PROMPT, n_queries=N_QUERIES
    )
    assert as_ids(tokenizer, to_messages(system, turns[:-1]), generation=True) == context.input_ids
    assert len(context.images) == sum(
        1 for _, c in turns[:-1] if not isinstance(c, str) for k, _ in c if k == "image"
    )


def test_template_is_plain_text_with_the_span_length() -> None:
    template = chat_template(256)
    assert template.count(st.IMG_PAD) == 256 and "Picture " in template
