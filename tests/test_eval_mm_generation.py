"""Benchmark answers generated as the original eval_mm scripts generate them, on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from eval_mm_fixtures import caption_file, refcoco_file, scienceqa_file, seed_file, vqa_file
from inference_fixtures import patch_generate
from qwenvl_train.eval_mm.catalog import get_benchmark
from qwenvl_train.eval_mm.choice import choose, option_losses, option_targets
from qwenvl_train.eval_mm.generation import MME_TOP_P, chat_texts, generate_texts, prompt_ids
from qwenvl_train.eval_mm.questions import read_questions
from qwenvl_train.eval_mm.runner import generate_predictions
from qwenvl_train.format import tokens as st
from qwenvl_train.inference.generation import load_pixels


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def test_left_padding_pad_is_eos_and_the_original_settings(tok, model, tmp_path: Path, monkeypatch) -> None:
    calls: list[dict] = []
    said = tok.encode_text("yes") + [st.IM_END_ID] + tok.encode_text(" more") + [st.ENDOFTEXT_ID]

    def fake_generate(input_ids, attention_mask, generation_config, **kwargs):
        calls.append(
            {"input_ids": input_ids, "attention_mask": attention_mask, "config": generation_config, **kwargs}
        )
        new = torch.tensor([said] * input_ids.shape[0])
        return torch.cat([input_ids, new], dim=1)

    patch_generate(monkeypatch, fake_generate)
    bench = get_benchmark("textvqa_val")
    questions, _ = read_questions(bench, vqa_file(tmp_path, 3), tmp_path)
    records, _ = generate_predictions(model, tok, bench, questions, batch_size=8)
    # The original stops at <|endoftext|> only: <|im_end|> is skipped when decoding and the text goes on.
    assert records == [{"question_id": 1000 + i, "answer": "yes more"} for i in range(3)]
    (call,) = calls
    ids, mask = call["input_ids"], call["attention_mask"]
    lengths = [len(prompt_ids(tok, q.prompt, model.config.n_queries)) for q in questions]
    assert ids.shape == (3, max(lengths))
    for row, length in enumerate(lengths):
        pads = max(lengths) - length
        assert ids[row, :pads].tolist() == [st.ENDOFTEXT_ID] * pads  # LEFT padding with <|endoftext|>
        assert mask[row].tolist() == [0] * pads + [1] * length
        assert ids[row, pads:].tolist() == prompt_ids(tok, questions[row].prompt, model.config.n_queries)
    config = call["config"]
    assert (config.pad_token_id, config.eos_token_id) == (st.ENDOFTEXT_ID, st.ENDOFTEXT_ID)
    assert (config.do_sample, config.num_beams, config.max_new_tokens, config.min_new_tokens) == (
        False,
        1,
        10,
        1,
    )
    assert call["pixel_values"].shape == (3, 3, model.config.image_size, model.config.image_size)
    calls.clear()
    grounding = get_benchmark("refcocog_test")
    questions, _ = read_questions(grounding, refcoco_file(tmp_path), tmp_path)
    records, _ = generate_predictions(model, tok, grounding, questions, batch_size=8)
    assert (calls[0]["config"].max_new_tokens, calls[0]["config"].min_new_tokens) == (28, 10)
    assert records[0] == {"question_id": 0, "answer": "yes more"}


@pytest.mark.parametrize(
    ("name", "write"),
    [("textvqa_val", vqa_file), ("refcoco_val", refcoco_file), ("flickr", caption_file)],
)
def test_batch_of_8_gives_the_answers_of_batch_1(name, write, tok, model, tmp_path: Path) -> None:
    bench = get_benchmark(name)
    questions, _ = read_questions(bench, write(tmp_path), tmp_path)
    one, _ = generate_predictions(model, tok, bench, questions, batch_size=1)
    eight, _ = generate_predictions(model, tok, bench, questions, batch_size=8)
    assert eight == one
    assert len({r.get("answer", r.get("caption")) for r in one}) > 1  # the prompts really differ
    if name == "refcoco_val":  # grounding is not stripped: the tiny model's answers keep their spaces
        assert any(r["answer"] != r["answer"].strip() for r in one)
    if name == "flickr":
        assert [sorted(r) for r in one] == [["caption", "image_id"]] * 3 and one[0]["image_id"] == 40


def test_min_new_tokens_is_honoured(tok, model, tmp_path: Path, monkeypatch) -> None:
    """With <|endoftext|> made the likeliest token, the answer is exactly min_new_tokens long."""
    lengths: list[int] = []
    real_generate = type(model).generate

    def counting_generate(self, **kwargs):
        out = real_generate(self, **kwargs)
        for row in out[:, kwargs["input_ids"].shape[1] :].tolist():
            lengths.append(row.index(st.ENDOFTEXT_ID) if st.ENDOFTEXT_ID in row else len(row))
        return out

    def eos_first(module, args, output):
        output[..., st.ENDOFTEXT_ID] += 1e4
        return output

    monkeypatch.setattr(type(model), "generate", counting_generate)
    handle = model.lm_head.register_forward_hook(eos_first)
    try:
        for name, write, expected in (("refcoco_val", refcoco_file, 10), ("vqav2_val", vqa_file, 1), ("nocaps", caption_file, 8)):  # fmt: skip
            lengths.clear()
            bench = get_benchmark(name)
            questions, _ = read_questions(bench, write(tmp_path), tmp_path)
            generate_predictions(model, tok, bench, questions[:3], batch_size=2)
            assert lengths == [expected] * 3, name
    finally:
        handle.remove()


@torch.no_grad()
def direct_losses(model, tok, prompt: list[int], letters, pixels) -> list[float]:
    """Each option's mean target loss from its own unpadded forward, with the pictures given to forward."""
    losses = []
    for target in option_targets(tok, letters):
        row = torch.tensor([prompt + target])
        logits = model(input_ids=row, pixel_values=pixels).logits[0].float()
        log_probs = F.log_softmax(logits[:-1], dim=-1)
        positions = range(len(prompt) - 1, len(prompt) - 1 + len(target))
        losses.append(
            -sum(float(log_probs[p, t]) for p, t in zip(positions, target, strict=True)) / len(target)
        )
    return losses


@pytest.mark.parametrize(
    ("name", "write"), [("scienceqa_test_img", scienceqa_file), ("seed_bench_image", seed_file)]
)
def test_choice_is_the_argmin_of_the_mean_target_loss(name, write, tok, model, tmp_path: Path) -> None:
    bench = get_benchmark(name)
    questions, _ = read_questions(bench, write(tmp_path), tmp_path)
    n_queries, size = model.config.n_queries, model.config.image_size
    prompts = [prompt_ids(tok, q.prompt, n_queries) for q in questions]
    pixels = load_pixels([q.images[0] for q in questions], size)
    assert option_targets(tok, "AB") == [tok.encode(" A"), tok.encode(" B")]
    batched = option_losses(
        model, prompts, [option_targets(tok, q.options) for q in questions], pixels, [1] * len(questions)
    )
    expected_letters = []
    for q, prompt, picture, losses in zip(questions, prompts, pixels, batched, strict=True):
        direct = direct_losses(model, tok, prompt, q.options, picture[None])
        assert losses == pytest.approx(direct, abs=1e-4)
        assert len(losses) == len(q.options)
        expected_letters.append(q.options[min(range(len(direct)), key=direct.__getitem__)])
    records, _ = generate_predictions(model, tok, bench, questions, batch_size=2)
    assert [r["answer"] for r in records] == expected_letters
    assert [r["question_id"] for r in records] == [q.id for q in questions]


def test_choose_takes_the_first_of_equal_losses() -> None:
    assert choose([2.0, 0.5, 0.5, 3.0]) == 1
    assert choose([1.0]) == 0


def test_mme_asks_as_model_chat_with_top_p_001(tok, model, tmp_path: Path, monkeypatch) -> None:
    from inference_fixtures import write_image

    # A random model rarely stops: 6 new tokens instead of generation_config.json's 512 keep each sampled answer
    # (top-p over 151,936 logits per step) short; both paths read the same config.
    monkeypatch.setattr(model.generation_config, "max_new_tokens", 6)
    picture = write_image(tmp_path / "images" / "color" / "a.png")
    query = f"<img>{picture}</img>\nIs there a red square? Please answer yes or no."
    pixels = load_pixels([str(picture)], model.config.image_size)
    torch.manual_seed(0)
    (ours,) = chat_texts(model, tok, [query], pixels)
    torch.manual_seed(0)
    response, _ = model.chat(tok, query=query, history=None, top_p=MME_TOP_P)
    assert ours == response
    configs = []
    real = type(model).generate
    monkeypatch.setattr(
        type(model),
        "generate",
        lambda self, **kw: configs.append(kw["generation_config"]) or real(self, **kw),
    )
    chat_texts(model, tok, [query, query + " Now."], torch.cat([pixels, pixels]))
    assert configs[0].top_p == MME_TOP_P and configs[0].do_sample is True  # as the chat model's config says
    assert st.IM_END_ID in configs[0].eos_token_id


def test_generate_texts_keeps_or_strips_as_the_catalog_says(tok, model, monkeypatch) -> None:
    said = tok.encode_text("  (1,2),(3,4) ")

    def fake_generate(input_ids, attention_mask, generation_config, **kwargs):
        return torch.cat([input_ids, torch.tensor([said] * input_ids.shape[0])], dim=1)

    patch_generate(monkeypatch, fake_generate)
    prompt = [tok.encode_text("hello")]
    assert generate_texts(model, tok, get_benchmark("refcoco_val"), prompt, None) == ["  (1,2),(3,4) "]
    assert generate_texts(model, tok, get_benchmark("okvqa_val"), prompt, None) == ["(1,2),(3,4)"]
    said = tok.encode_text(" it 's a dog . yes , no ? ") + [st.IM_END_ID, st.ENDOFTEXT_ID, st.ENDOFTEXT_ID]
    # As the original decodes: special ids dropped, no clean-up of the spaces before punctuation.
    assert generate_texts(model, tok, get_benchmark("gqa_testdev"), prompt, None) == [
        "it 's a dog . yes , no ?"
    ]
