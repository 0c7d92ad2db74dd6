"""Attention through transformers' registry: eager masks equal the original's, SDPA (and flex) agree with eager on
logits, generation and LoRA gradients, packed samples attend only within themselves. Tiny model, CPU, fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask

from qwenvl_train.model import QwenVLConfig, register
from qwenvl_train.model.attention import causal_additive_mask
from qwenvl_train.model.modeling import build_attention_mask

IMG, IMG_END, IMG_PAD, PAD = 151857, 151858, 151859, 151643
register()


def load(model_dir: Path, impl: str) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=impl)
    assert model.config._attn_implementation == impl
    return model


def image_row(nq: int, before: list[int], after: list[int]) -> list[int]:
    return before + [IMG] + [IMG_PAD] * nq + [IMG_END] + after


@pytest.fixture(scope="module")
def nq(tiny_model_dir: Path) -> int:
    return QwenVLConfig.from_pretrained(tiny_model_dir).n_queries


@pytest.fixture(scope="module")
def left_padded(nq: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two rows, both with an image, the second left-padded by 3: ``(input_ids, attention_mask, pixels)``."""
    row0 = image_row(nq, [872, 198, 11, 5], [151645, 198, 40, 1079])
    row1 = [PAD] * 3 + image_row(nq, [872], [198, 40, 1079, 9])
    ids = torch.tensor([row0, row1])
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    pixels = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(3))
    return ids, mask, pixels


@pytest.mark.parametrize("past", [0, 4])
def test_eager_masks_from_transformers_equal_the_originals(past: int) -> None:
    """create_causal_mask under eager gives exactly the additive mask of the original code (0 / dtype minimum),
    with left padding, without padding, at prefill and after a cache."""
    config = QwenVLConfig()
    config._attn_implementation = "eager"
    q_len = 5
    padding = torch.ones(2, past + q_len, dtype=torch.long)
    padding[1, :2] = 0
    cache = None
    if past:
        cache = DynamicCache(config=config)
        cache.update(torch.zeros(2, 1, past, 4), torch.zeros(2, 1, past, 4), 0)
    embeds = torch.zeros(2, q_len, 8)
    for attention_mask in (padding, None):
        ours = create_causal_mask(
            config=config, inputs_embeds=embeds, attention_mask=attention_mask, cache=cache
        )
        original, is_causal = build_attention_mask(
            attention_mask, q_len, past, torch.float32, torch.device("cpu")
        )
        if original is None:
            assert is_causal == (past == 0)
            original = causal_additive_mask(q_len, past + q_len, torch.float32, torch.device("cpu"))
        assert torch.equal(ours, original.expand_as(ours))


def test_sdpa_logits_equal_eager_with_left_padding_and_images(tiny_model_dir: Path, left_padded) -> None:
    ids, mask, pixels = left_padded
    with torch.no_grad():
        eager = load(tiny_model_dir, "eager").eval()(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        sdpa = load(tiny_model_dir, "sdpa").eval()(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    real = mask.bool()
    assert torch.isfinite(sdpa.logits).all()
    torch.testing.assert_close(sdpa.logits[real], eager.logits[real], rtol=1e-5, atol=1e-5)
    # The image matters to the real positions: a different picture moves the logits by far more than 1e-5.
    with torch.no_grad():
        other = load(tiny_model_dir, "sdpa").eval()(input_ids=ids, attention_mask=mask, pixel_values=-pixels)
    assert (other.logits[real] - sdpa.logits[real]).abs().max() > 1e-3


def test_output_attentions_under_sdpa_gives_the_eager_weights(tiny_model_dir: Path, left_padded) -> None:
    ids, mask, pixels = left_padded
    with torch.no_grad():
        eager = load(tiny_model_dir, "eager").eval()(
            input_ids=ids, attention_mask=mask, pixel_values=pixels, output_attentions=True
        )
        sdpa = load(tiny_model_dir, "sdpa").eval()(
            input_ids=ids, attention_mask=mask, pixel_values=pixels, output_attentions=True
        )
    assert len(sdpa.attentions) == len(eager.attentions) == 2
    for a, b in zip(sdpa.attentions, eager.attentions, strict=True):
        torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a[1, :, 3:], b[1, :, 3:], rtol=1e-5, atol=1e-6)
        assert (b[1, :, 3:, :3] == 0).all()  # nobody attends to the left padding


def test_generation_under_sdpa_equals_eager(tiny_model_dir: Path, left_padded) -> None:
    ids, mask, pixels = left_padded
    outputs = []
    for impl in ("eager", "sdpa"):
        model = load(tiny_model_dir, impl).eval()
        with torch.no_grad():
            outputs.append(
                model.generate(
                    input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=6, do_sample=False
                )
            )
    assert outputs[0].shape == (2, ids.shape[1] + 6)
    assert torch.equal(outputs[0], outputs[1])


def test_lora_gradients_under_sdpa_equal_eager(tiny_model_dir: Path, left_padded) -> None:
    from peft import LoraConfig, get_peft_model

    ids, mask, pixels = left_padded
    labels = ids.masked_fill(mask == 0, -100)
    # The last padding position predicts the first real token; it attends to nothing (a fully masked row), where
    # kernels legitimately differ (eager: uniform weights, SDPA: zeros), so that target is left out.
    labels[1, 3] = -100
    losses, grads = [], []
    for impl in ("eager", "sdpa"):
        torch.manual_seed(0)
        model = get_peft_model(
            load(tiny_model_dir, impl),
            LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "w1"], init_lora_weights=False),
        )
        model.train()
        loss = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=0)
    assert set(grads[0]) == set(grads[1]) and any("lora_A" in n for n in grads[0])
    for name, grad in grads[0].items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_packed_samples_attend_only_within_themselves(tiny_model_dir: Path, nq: int, impl: str) -> None:
    """Two samples on one row with positions restarting at 0 give each sample's own logits, image included."""
    first = image_row(nq, [872, 198], [40, 1079, 5])
    second = [872, 198, 11, 40, 1079, 264, 3]
    pixels = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(5))
    model = load(tiny_model_dir, impl).eval()
    packed = torch.tensor([first + second])
    positions = torch.tensor([list(range(len(first))) + list(range(len(second)))])
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=positions, pixel_values=pixels).logits[0]
        alone0 = model(input_ids=torch.tensor([first]), pixel_values=pixels).logits[0]
        alone1 = model(input_ids=torch.tensor([second])).logits[0]
        unconfined = model(input_ids=packed, pixel_values=pixels).logits[0]
    torch.testing.assert_close(together[: len(first)], alone0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together[len(first) :], alone1, rtol=1e-5, atol=1e-5)
    # Without the positions, the second sample would see the first (and sit at shifted positions).
    assert (unconfined[len(first) :] - alone1).abs().max() > 1e-3


@pytest.mark.slow
def test_flex_attention_matches_sdpa(tiny_model_dir: Path, nq: int) -> None:
    """flex_attention runs on CPU (compiled by transformers on first use, ~30 s) and agrees with SDPA."""
    ids = torch.tensor([image_row(nq, [872, 198], [40, 1079, 5, 6])])
    pixels = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        flex = load(tiny_model_dir, "flex_attention").eval()(input_ids=ids, pixel_values=pixels).logits
        sdpa = load(tiny_model_dir, "sdpa").eval()(input_ids=ids, pixel_values=pixels).logits
    torch.testing.assert_close(flex, sdpa, rtol=1e-5, atol=1e-5)


def test_unknown_attention_implementation_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="no_such_kernel"):
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="no_such_kernel")


def test_generation_with_a_static_cache_equals_the_dynamic_one(tiny_model_dir: Path, left_padded) -> None:
    """generate() hands a prepared 4D mask to the model for a static cache; it is used as it is."""
    ids, mask, pixels = left_padded
    model = load(tiny_model_dir, "sdpa").eval()
    kwargs = {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixels,
        "max_new_tokens": 4,
        "do_sample": False,
    }
    with torch.no_grad():
        dynamic = model.generate(**kwargs)
        static = model.generate(**kwargs, cache_implementation="static")
    assert torch.equal(static, dynamic)
