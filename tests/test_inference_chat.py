"""``model.chat`` / ``model.chat_stream`` on the tiny model: determinism, streaming, stop tokens, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from inference_fixtures import write_image
from qwenvl_train.format import tokens as st
from qwenvl_train.inference.generation import GenerationSettingsError, chat_generation_config


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def model(tiny_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture
def query(tmp_path: Path, tok) -> str:
    image = write_image(tmp_path / "red.png", colour=(220, 20, 20))
    return tok.from_list_format([{"image": str(image)}, {"text": "What colour is it?"}])


def test_greedy_chat_is_deterministic_and_returns_the_history(model, tok, query: str) -> None:
    first, history = model.chat(tok, query, history=None, do_sample=False, max_new_tokens=8)
    second, _ = model.chat(tok, query, history=None, do_sample=False, max_new_tokens=8)
    assert first == second and first
    assert history == [(query, first)]
    follow_up, history2 = model.chat(tok, "And now?", history=history, do_sample=False, max_new_tokens=8)
    assert history2 == [(query, first), ("And now?", follow_up)] and history == [(query, first)]


def test_sampling_follows_the_seed(model, tok, query: str) -> None:
    torch.manual_seed(3)
    a, _ = model.chat(tok, query, max_new_tokens=6)
    torch.manual_seed(3)
    b, _ = model.chat(tok, query, max_new_tokens=6)
    assert a == b


def test_chat_stream_yields_growing_prefixes_ending_in_the_chat_response(model, tok, query: str) -> None:
    response, _ = model.chat(tok, query, do_sample=False, max_new_tokens=10)
    texts = list(model.chat_stream(tok, query, None, do_sample=False, max_new_tokens=10))
    assert len(texts) >= 2 and texts[-1] == response
    for shorter, longer in zip(texts, texts[1:], strict=False):
        assert longer.startswith(shorter) and longer != shorter


def boost_at_step(model, token_id: int, step: int) -> list[int]:
    """Make ``token_id`` the argmax at generation step ``step`` (1 = the first new token); returns a call log."""
    calls: list[int] = []

    def hook(module, inputs, output):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == step:
            output = output.clone()
            output[..., -1, token_id] += 1e4
        return output

    model.lm_head.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("stop_id", [st.IM_END_ID, st.IM_START_ID])
def test_generation_stops_at_im_end_and_im_start(model, tok, query: str, stop_id: int) -> None:
    free, _ = model.chat(tok, query, do_sample=False, max_new_tokens=6)
    calls = boost_at_step(model, stop_id, 3)
    response, _ = model.chat(tok, query, do_sample=False, max_new_tokens=6)
    assert len(calls) == 3  # no forward after the stop token
    # The two tokens before the stop are the free run's first two.
    assert free.startswith(response) and 0 < len(response) < len(free)
    calls.clear()
    assert list(model.chat_stream(tok, query, None, do_sample=False, max_new_tokens=6))[-1] == response


def test_padding_rows_of_the_output_layer_are_never_generated(model, tok, query: str) -> None:
    """Ids past the tokenizer's last token (the output layer's padding rows) cannot be decoded: an untrained model
    whose argmax lands there still answers, with the best real token in its place."""
    padding_row = st.NUM_BPE_RANKS + len(st.SPECIAL_TOKENS) + 40
    assert padding_row < model.config.vocab_size
    with pytest.raises(KeyError):
        tok.decode([padding_row])
    free, _ = model.chat(tok, query, do_sample=False, max_new_tokens=4)
    calls = boost_at_step(model, padding_row, 1)
    response, _ = model.chat(tok, query, do_sample=False, max_new_tokens=4)
    assert len(calls) == 4 and response == free
    config = chat_generation_config(model)
    assert config.suppress_tokens == list(
        range(st.NUM_BPE_RANKS + len(st.SPECIAL_TOKENS), model.config.vocab_size)
    )


def test_settings_come_from_generation_config_and_can_be_overridden(model) -> None:
    config = chat_generation_config(model)
    assert (config.do_sample, config.top_p, config.top_k, config.max_new_tokens) == (True, 0.3, 0, 512)
    assert config.eos_token_id == [st.ENDOFTEXT_ID, st.IM_END_ID, st.IM_START_ID]
    greedy = chat_generation_config(model, do_sample=False, max_new_tokens=5)
    assert (greedy.do_sample, greedy.max_new_tokens) == (False, 5)
    assert model.generation_config.max_new_tokens == 512  # the model's own config is untouched
    with pytest.raises(GenerationSettingsError, match="unknown generation setting"):
        chat_generation_config(model, top_q=0.5)


def test_a_base_model_generation_config_is_refused(model, tok) -> None:
    model.generation_config.chat_format = "raw"
    with pytest.raises(GenerationSettingsError, match="chat_format 'chatml'.*'raw'"):
        model.chat(tok, "Hello")


def test_the_original_readme_inference_code_runs(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The original README's snippet, minus trust_remote_code (the tiny random model answers nonsense)."""
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "demo.jpeg", (64, 48), (200, 180, 30))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    torch.manual_seed(1234)
    query = tokenizer.from_list_format([{"image": "demo.jpeg"}, {"text": "这是什么?"}])
    response, history = model.chat(tokenizer, query=query, history=None, max_new_tokens=4)
    response, history = model.chat(tokenizer, "框出图中击掌的位置", history=history, max_new_tokens=4)
    assert len(history) == 2 and history[0][0] == "Picture 1: <img>demo.jpeg</img>\n这是什么?"
    image = tokenizer.draw_bbox_on_latest_picture(response, history)
    assert image is None or image.size == (64, 48)
    boxed = tokenizer.draw_bbox_on_latest_picture("<ref>击掌</ref><box>(100,100),(500,600)</box>", history)
    assert boxed.size == (64, 48)
