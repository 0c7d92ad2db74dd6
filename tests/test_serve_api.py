"""``qwenvl-train serve`` through the official ``openai`` client: plain and streamed answers, images as data URLs,
multi-turn, the prompt exactly as training renders it, usage, finish_reason, the boxes field, the API key."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inference_fixtures import write_image
from serve_fixtures import png_data_url, running_server

openai = pytest.importorskip("openai")

KEY = "test-key-123"


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    from qwenvl_train.inference.loading import load_for_inference

    return load_for_inference(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def server(loaded) -> Iterator[str]:
    with running_server(*loaded, max_batch_size=4) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=60, max_retries=0)


def image_message(text: str, colour=(200, 30, 30)) -> dict:
    return {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": png_data_url(colour=colour)}},
            {"type": "text", "text": text},
        ],
    }


def test_health_and_models(server: str, client) -> None:
    health = httpx.get(f"{server}/health", timeout=10).json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_answer_equals_model_chat(client, loaded, tmp_path: Path) -> None:
    model, tokenizer = loaded
    image = write_image(tmp_path / "red.png", size=(40, 30), colour=(200, 30, 30))
    query = tokenizer.from_list_format([{"image": str(image)}, {"text": "Where is it?"}])
    expected, _ = model.chat(tokenizer, query, do_sample=False, max_new_tokens=8)
    response = client.chat.completions.create(
        model="tiny", messages=[image_message("Where is it?")], max_tokens=8, temperature=0
    )
    choice = response.choices[0]
    assert choice.message.content == expected
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert response.usage.completion_tokens <= 8
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    assert choice.message.model_extra["boxes"] == [] or isinstance(choice.message.model_extra["boxes"], list)


def test_length_finish_and_max_completion_tokens(client) -> None:
    response = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Hello"}],
        max_completion_tokens=3,
        temperature=0,
        stop=["<nothing like this>"],
    )
    assert response.usage.completion_tokens <= 3
    if response.usage.completion_tokens == 3:
        assert response.choices[0].finish_reason == "length"


def test_stream_joins_to_the_plain_answer(client) -> None:
    messages = [image_message("What is this?", colour=(20, 200, 30))]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=messages,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == plain.choices[0].finish_reason
    assert "boxes" in finals[0].choices[0].delta.model_extra
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    )


def test_seeded_sampling_repeats(client) -> None:
    def ask() -> str:
        messages = [{"role": "user", "content": "Tell me something"}]
        response = client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=6, temperature=1.0, top_p=0.9, seed=7
        )
        return response.choices[0].message.content

    assert ask() == ask()


def test_multi_turn_prompt_is_the_training_render(loaded) -> None:
    """Pictures numbered over the whole chat, system prompt, history: the ids of training's renderer."""
    from qwenvl_train.format import tokens as st
    from qwenvl_train.format.render import render_conversation
    from qwenvl_train.format.sample import Turn
    from qwenvl_train.serve.prompt import render
    from qwenvl_train.serve.schema import parse_request

    model, tokenizer = loaded
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            image_message("What is it?"),
            {"role": "assistant", "content": "A red square."},
            image_message("And this <ref>one</ref>?", colour=(0, 0, 255)),
        ]
    }
    prompt = render(parse_request(body), tokenizer, model.config.n_queries, 6144)
    turns = [
        Turn("user", f"Picture 1: {st.IMG_START}a.png{st.IMG_END}\nWhat is it?", 0),
        Turn("assistant", "A red square.", 1),
        Turn("user", f"Picture 2: {st.IMG_START}b.png{st.IMG_END}\nAnd this <ref>one</ref>?", 2),
        Turn("assistant", "x", 3),
    ]
    rendered = render_conversation(turns, tokenizer, system="Be brief.", n_queries=model.config.n_queries)
    assert rendered.input_ids[: len(prompt.input_ids)] == prompt.input_ids
    opening = [st.IM_START_ID, *tokenizer.encode_text("assistant"), *tokenizer.encode_text("\n")]
    assert prompt.input_ids[-len(opening) :] == opening
    assert prompt.pictures == [1, 2] and prompt.latest_picture == 2


def test_multi_turn_through_the_client(client) -> None:
    first = client.chat.completions.create(
        model="tiny", messages=[image_message("What is it?")], max_tokens=5, temperature=0
    )
    messages = [
        image_message("What is it?"),
        {"role": "assistant", "content": first.choices[0].message.content or "A square."},
        {"role": "user", "content": [{"type": "text", "text": "Where is it?"}]},
    ]
    second = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5, temperature=0)
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_boxes_field_through_the_server(loaded, monkeypatch) -> None:
    """A scripted answer with a box, an unfinished one and a malformed one: all reported, pixels on picture 1."""
    from qwenvl_train.format import tokens as st
    from qwenvl_train.format.render import encode_markup
    from qwenvl_train.serve import batcher

    model, tokenizer = loaded
    answer = (
        f"{st.REF_START}the square{st.REF_END}{st.BOX_START}(100,200),(500,1000){st.BOX_END}"
        f" and {st.BOX_START}(1,2){st.BOX_END} {st.BOX_START}(3,4"
    )
    script, _ = encode_markup(tokenizer, answer, model.config.n_queries)
    counters: dict[int, tuple[object, int]] = {}  # the sampling kept alive: its id is not reused

    def scripted(logits, sampling, seen) -> int:
        step = counters.get(id(sampling), (sampling, 0))[1]
        counters[id(sampling)] = (sampling, step + 1)
        return script[step] if step < len(script) else st.IM_END_ID

    monkeypatch.setattr(batcher, "pick", scripted)
    with running_server(model, tokenizer) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", timeout=60, max_retries=0)
        message = image_message("Where is the square?")
        message["content"][0]["image_url"]["url"] = png_data_url(width=200, height=100)
        response = client.chat.completions.create(model="tiny", messages=[message], max_tokens=100)
    assert response.choices[0].message.content == answer
    assert response.choices[0].finish_reason == "stop"
    ok, malformed, unfinished = response.choices[0].message.model_extra["boxes"]
    assert ok == {
        "ref": "the square",
        "kind": "box",
        "status": "ok",
        "text": "(100,200),(500,1000)",
        "box": [100, 200, 500, 1000],
        "points": [[100, 200], [500, 1000]],
        "picture": 1,
        "pixels": [20, 20, 100, 100],
    }
    assert malformed["status"] == "malformed" and malformed["box"] is None and malformed["ref"] is None
    assert unfinished["status"] == "unfinished" and unfinished["pixels"] is None


def test_api_key(loaded) -> None:
    with running_server(*loaded, api_key=KEY) as url:
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", timeout=30, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.models.list()
        assert caught.value.status_code == 401
        assert caught.value.body["code"] == "invalid_api_key"
        none = httpx.post(f"{url}/v1/chat/completions", json={"messages": []}, timeout=10)
        assert none.status_code == 401 and set(none.json()["error"]) == {"message", "type", "param", "code"}
        right = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, timeout=30, max_retries=0)
        response = right.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert response.choices[0].message.content is not None
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200


def test_api_key_from_the_environment(loaded, monkeypatch) -> None:
    from qwenvl_train.commands.serve import API_KEY_ENV, build_state

    monkeypatch.setenv(API_KEY_ENV, "from-env")
    state = build_state(*loaded, argparse.Namespace(), "tiny")
    try:
        assert state.api_key == "from-env"
    finally:
        state.batcher.close()
