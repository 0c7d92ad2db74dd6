"""The native Qwen-VL model: key set of the real checkpoint, loading/saving, cache, attention paths, image splice,
generation, length extrapolation and padding. Everything runs on CPU on the tiny model from ``make_tiny``."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from qwenvl_train.model import QwenVLConfig, QwenVLForCausalLM, image_transform, register
from qwenvl_train.model.modeling import build_attention_mask, logn_scale, ntk_alpha, ntk_base
from qwenvl_train.model.vision import ResamplerAttention, VisionAttention, resize_pos_table, sincos_pos_table
from qwenvl_train.tiny import make_tiny, save_original_bin_shards

# Real config.json / pytorch_model.bin.index.json of Qwen-VL-Chat, kept in tests/reference (no weights).
REFERENCE = Path(__file__).resolve().parent / "reference" / "qwen-vl-chat"

IMG, IMG_END, IMG_PAD = 151857, 151858, 151859
register()


def image_prompt(n_queries: int, before: list[int], after: list[int], fill: int = IMG_PAD) -> list[int]:
    return before + [IMG] + [fill] * n_queries + [IMG_END] + after


@pytest.fixture(scope="module")
def auto_model_cls():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path, auto_model_cls) -> QwenVLForCausalLM:
    return auto_model_cls.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def nq(model: QwenVLForCausalLM) -> int:
    return model.config.n_queries


@pytest.fixture()
def pixels() -> torch.Tensor:
    return torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(1))


@pytest.fixture()
def image_ids(nq: int) -> torch.Tensor:
    return torch.tensor([image_prompt(nq, [872, 198, 11], [151645, 198, 77091, 198, 40, 1079])])


# ----------------------------------------------------------------------------------------------------------------
# 1. The real checkpoint's key set, size and config
# ----------------------------------------------------------------------------------------------------------------


def test_full_size_model_has_exactly_the_checkpoint_keys_and_size() -> None:
    index = json.loads((REFERENCE / "pytorch_model.bin.index.json").read_text())
    config = QwenVLConfig.from_pretrained(REFERENCE)
    with torch.device("meta"):
        model = QwenVLForCausalLM(config)
    state = model.state_dict()

    assert set(state) == set(index["weight_map"])
    assert len(state) == 853
    assert set(dict(model.named_parameters())) == set(state)  # everything stored is a parameter, no buffers
    n_params = sum(t.numel() for t in state.values())
    assert n_params == 9_656_935_168
    assert 2 * n_params == index["metadata"]["total_size"]  # bf16

    shapes = {
        "transformer.wte.weight": (151936, 4096),
        "transformer.h.0.attn.c_attn.weight": (12288, 4096),
        "transformer.h.0.attn.c_attn.bias": (12288,),
        "transformer.h.0.attn.c_proj.weight": (4096, 4096),
        "transformer.h.31.mlp.w1.weight": (11008, 4096),
        "transformer.h.31.mlp.w2.weight": (11008, 4096),
        "transformer.h.31.mlp.c_proj.weight": (4096, 11008),
        "lm_head.weight": (151936, 4096),
        "transformer.visual.conv1.weight": (1664, 3, 14, 14),
        "transformer.visual.positional_embedding": (256, 1664),
        "transformer.visual.transformer.resblocks.47.attn.in_proj.weight": (4992, 1664),
        "transformer.visual.transformer.resblocks.47.mlp.c_fc.weight": (8192, 1664),
        "transformer.visual.attn_pool.query": (256, 4096),
        "transformer.visual.attn_pool.pos_embed": (256, 4096),
        "transformer.visual.attn_pool.kv_proj.weight": (4096, 1664),
        "transformer.visual.attn_pool.attn.in_proj_weight": (12288, 4096),
        "transformer.visual.attn_pool.attn.out_proj.weight": (4096, 4096),
        "transformer.visual.proj": (4096, 4096),
    }
    for name, shape in shapes.items():
        assert tuple(state[name].shape) == shape, name
    assert model.transformer.visual.attn_pool.attn.heads == 32


def test_autoconfig_reads_the_original_config_without_remote_code() -> None:
    from transformers import AutoConfig

    import qwenvl_train  # noqa: F401  (registers the classes)

    config = AutoConfig.from_pretrained(REFERENCE)
    assert type(config) is QwenVLConfig
    assert config.n_queries == 256
    assert (config.image_start_id, config.image_end_id, config.image_pad_id) == (IMG, IMG_END, IMG_PAD)
    assert config.seq_length == 2048 and config.use_dynamic_ntk and config.use_logn_attn
    assert config.dtype == torch.bfloat16
    assert not hasattr(config, "auto_map")  # nothing points transformers at remote code any more
    assert config.visual["width"] == 1664 and int(1664 * config.visual["mlp_ratio"]) == 8192


def test_config_rejects_a_non_square_query_count() -> None:
    from huggingface_hub.errors import StrictDataclassClassValidationError

    with pytest.raises(StrictDataclassClassValidationError, match="perfect square"):
        QwenVLConfig(visual={"n_queries": 15})


# ----------------------------------------------------------------------------------------------------------------
# 2. Loading and saving
# ----------------------------------------------------------------------------------------------------------------


def test_loaded_weights_are_the_file_contents(tiny_model_dir: Path, auto_model_cls) -> None:
    loaded, info = auto_model_cls.from_pretrained(tiny_model_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    on_disk = load_file(str(tiny_model_dir / "model.safetensors"))
    state = loaded.state_dict()
    assert set(state) == set(on_disk)
    for name, tensor in on_disk.items():
        assert torch.equal(state[name], tensor), name
    assert loaded.lm_head.weight.data_ptr() != loaded.transformer.wte.weight.data_ptr()  # not tied
    assert loaded.dtype == torch.float32  # torch_dtype of config.json
    assert not loaded.transformer.visual.attn_pool.pos_embed.requires_grad


def assert_reloads_identically(model, auto_model_cls, folder: Path, image_ids, pixels) -> None:
    """``folder`` loads with no missing or unexpected keys and gives bit-identical logits with an image."""
    reloaded, info = auto_model_cls.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        expected = model(input_ids=image_ids, pixel_values=pixels).logits
        got = reloaded.eval()(input_ids=image_ids, pixel_values=pixels).logits
    assert torch.equal(expected, got)


def test_save_pretrained_round_trip_gives_identical_logits(
    model, auto_model_cls, tmp_path: Path, image_ids, pixels
) -> None:
    model.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.bin"))
    assert (tmp_path / "model.safetensors").exists()
    assert "auto_map" not in json.loads((tmp_path / "config.json").read_text())
    assert_reloads_identically(model, auto_model_cls, tmp_path, image_ids, pixels)


def test_original_sharded_bin_layout_loads(
    model, auto_model_cls, tiny_model_dir: Path, tmp_path: Path, image_ids, pixels
) -> None:
    save_original_bin_shards(model, tmp_path, n_shards=3)
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")
    assert sorted(p.name for p in tmp_path.glob("*.bin")) == [
        f"pytorch_model-0000{k}-of-00003.bin" for k in (1, 2, 3)
    ]
    assert_reloads_identically(model, auto_model_cls, tmp_path, image_ids, pixels)


def test_dtype_argument_is_honoured(tiny_model_dir: Path, auto_model_cls, image_ids, pixels) -> None:
    bf16 = auto_model_cls.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    assert bf16.transformer.visual.conv1.weight.dtype == torch.bfloat16
    with torch.no_grad():
        # float32 pixels are cast to the tower's dtype
        logits = bf16(input_ids=image_ids, pixel_values=pixels).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_fresh_model_initialises_pos_embed_to_the_sincos_table() -> None:
    config = QwenVLConfig(**{k: v for k, v in json.loads(_tiny_config_text()).items() if k != "model_type"})
    fresh = QwenVLForCausalLM(config)
    pool = fresh.transformer.visual.attn_pool
    assert torch.equal(pool.pos_embed, sincos_pos_table(128, 4))
    assert abs(fresh.transformer.wte.weight.std().item() - config.initializer_range) < 2e-3
    assert torch.equal(fresh.transformer.ln_f.weight, torch.ones(128))


def test_fresh_resampler_attention_is_initialised_like_nn_multihead_attention() -> None:
    """The original's resampler is an nn.MultiheadAttention: Xavier-uniform [Q; K; V] projections, zero biases
    (its _init_weights touches only nn.Linear). A std-0.02 normal instead (the generic init) leaves the attention
    uniform, so features of the same shape in different cells come out nearly equal (0.2% of their spread)."""
    config = QwenVLConfig(**{k: v for k, v in json.loads(_tiny_config_text()).items() if k != "model_type"})
    torch.manual_seed(0)
    fresh = QwenVLForCausalLM(config)
    attn = fresh.transformer.visual.attn_pool.attn
    embed = attn.embed_dim
    bound = math.sqrt(6.0 / (embed + 3 * embed))  # xavier_uniform_ on the [3E, E] stacked weight
    weight = attn.in_proj_weight
    assert (
        weight.abs().max().item() <= bound and abs(weight.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    )
    assert torch.equal(attn.in_proj_bias, torch.zeros(3 * embed))


def _tiny_config_text() -> str:
    from qwenvl_train.tiny import tiny_config_dict

    return json.dumps(tiny_config_dict())


# ----------------------------------------------------------------------------------------------------------------
# 3. Cache, attention implementations, gradient checkpointing
# ----------------------------------------------------------------------------------------------------------------


def test_incremental_decoding_matches_one_full_forward(model, image_ids, pixels, nq) -> None:
    from transformers.cache_utils import DynamicCache

    prefill = nq + 6  # the whole image span and a bit
    with torch.no_grad():
        full = model(input_ids=image_ids, pixel_values=pixels, use_cache=False).logits
        out = model(
            input_ids=image_ids[:, :prefill], pixel_values=pixels, cache=DynamicCache(config=model.config)
        )
        pieces = [out.logits]
        for i in range(prefill, image_ids.shape[1]):
            out = model(input_ids=image_ids[:, i : i + 1], cache=out.cache)
            pieces.append(out.logits)
    assert out.cache.get_seq_length() == image_ids.shape[1]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_past_key_values_is_an_alias_of_cache(model, image_ids, pixels) -> None:
    with torch.no_grad():
        first = model(input_ids=image_ids[:, :-1], pixel_values=pixels)
        via_alias = model(input_ids=image_ids[:, -1:], past_key_values=first.cache).logits
        full = model(input_ids=image_ids, pixel_values=pixels).logits
    torch.testing.assert_close(via_alias[:, -1], full[:, -1], rtol=1e-5, atol=1e-5)


def test_a_training_forward_keeps_no_cache_unless_asked(model, image_ids, pixels) -> None:
    """As the original finetune.py's ``use_cache=False``: a forward in training mode with gradients builds no KV
    cache (it would copy every layer's keys and values); inference, and an explicit ``use_cache=True``, do."""
    labels = image_ids.clone()
    model.train()
    try:
        trained = model(input_ids=image_ids, pixel_values=pixels, labels=labels)
        asked = model(input_ids=image_ids, pixel_values=pixels, labels=labels, use_cache=True)
        with torch.no_grad():
            no_grad = model(input_ids=image_ids, pixel_values=pixels)
    finally:
        model.eval()
    inferred = model(input_ids=image_ids, pixel_values=pixels)
    assert trained.cache is None and trained.loss.requires_grad
    assert [out.cache.get_seq_length() for out in (asked, no_grad, inferred)] == [image_ids.shape[1]] * 3
    torch.testing.assert_close(trained.loss, asked.loss)  # the same numbers either way


def test_sdpa_and_eager_agree(tiny_model_dir: Path, auto_model_cls, image_ids, pixels) -> None:
    eager = auto_model_cls.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()
    sdpa = auto_model_cls.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    batch = torch.cat([image_ids, image_ids], dim=0)
    mask = torch.ones_like(batch)
    mask[1, -3:] = 0
    pixel_batch = torch.cat([pixels, -pixels], dim=0)
    with torch.no_grad():
        a = eager(input_ids=batch, attention_mask=mask, pixel_values=pixel_batch, output_attentions=True)
        b = sdpa(input_ids=batch, attention_mask=mask, pixel_values=pixel_batch).logits
    torch.testing.assert_close(a.logits, b, rtol=1e-5, atol=1e-5)
    assert len(a.attentions) == 2 and a.attentions[0].shape == (2, 4, batch.shape[1], batch.shape[1])


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(
    tiny_model_dir: Path, auto_model_cls, image_ids, pixels
) -> None:
    def loss_and_grads(checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        m = auto_model_cls.from_pretrained(tiny_model_dir)
        m.transformer.visual.attn_pool.pos_embed.requires_grad_(True)
        calls = [0]
        if checkpointing:
            m.gradient_checkpointing_enable()
            for module in m.modules():
                if getattr(module, "gradient_checkpointing", False) and hasattr(
                    module, "_gradient_checkpointing_func"
                ):
                    inner = module._gradient_checkpointing_func

                    def counted(*args, _inner=inner, **kwargs):
                        calls[0] += 1
                        return _inner(*args, **kwargs)

                    module._gradient_checkpointing_func = counted
        m.train()
        loss = m(input_ids=image_ids, pixel_values=pixels, labels=image_ids).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        return loss.detach(), grads, calls[0]

    loss_ref, grads_ref, _ = loss_and_grads(False)
    loss_gc, grads_gc, n_calls = loss_and_grads(True)
    assert n_calls == 2 + 2  # both decoder blocks and both vision blocks were checkpointed
    torch.testing.assert_close(loss_gc, loss_ref, rtol=0, atol=0)
    assert set(grads_gc) == set(grads_ref)
    assert (
        "transformer.visual.conv1.weight" in grads_ref and "transformer.h.0.attn.c_attn.weight" in grads_ref
    )
    for name, grad in grads_ref.items():
        torch.testing.assert_close(grads_gc[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_loss_is_shifted_cross_entropy_and_honours_num_items_in_batch(model, image_ids, pixels) -> None:
    labels = image_ids.clone()
    labels[:, :5] = -100
    with torch.no_grad():
        out = model(input_ids=image_ids, pixel_values=pixels, labels=labels)
        summed = model(input_ids=image_ids, pixel_values=pixels, labels=labels, num_items_in_batch=7).loss
    manual = nn.functional.cross_entropy(out.logits[0, :-1].float(), labels[0, 1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, manual)
    n_counted = int((labels[0, 1:] != -100).sum())
    torch.testing.assert_close(summed, manual * n_counted / 7)


# ----------------------------------------------------------------------------------------------------------------
# 4. The image splice
# ----------------------------------------------------------------------------------------------------------------


def test_logits_follow_the_image_in_the_span(model, image_ids, pixels, nq) -> None:
    start = int((image_ids[0] == IMG).nonzero())
    with torch.no_grad():
        a = model(input_ids=image_ids, pixel_values=pixels).logits[0]
        b = model(input_ids=image_ids, pixel_values=torch.flip(pixels, dims=[-1]) * 0.5).logits[0]
    assert torch.equal(a[: start + 1], b[: start + 1])  # text up to <img> cannot see the image
    assert ((a[start + 1 :] - b[start + 1 :]).abs().amax(dim=-1) > 1e-6).all()  # every later position does


def test_ids_inside_the_span_do_not_matter(model, pixels, nq) -> None:
    padded = torch.tensor([image_prompt(nq, [872, 198], [198, 40])])
    other = torch.tensor([image_prompt(nq, [872, 198], [198, 40], fill=1000)])
    with torch.no_grad():
        a = model(input_ids=padded, pixel_values=pixels).logits
        b = model(input_ids=other, pixel_values=pixels).logits
    assert torch.equal(a, b)


def test_images_fill_spans_in_reading_order(model, nq) -> None:
    g = torch.Generator().manual_seed(3)
    p = torch.randn(3, 3, 56, 56, generator=g)
    row0 = image_prompt(nq, [11], image_prompt(nq, [12], [13]))
    row1 = image_prompt(nq, [14], [15] * (nq + 4))
    batch = torch.tensor([row0, row1])
    with torch.no_grad():
        together = model(input_ids=batch, pixel_values=p).logits
        first = model(input_ids=batch[:1], pixel_values=p[:2]).logits
        second = model(input_ids=batch[1:], pixel_values=p[2:]).logits
    torch.testing.assert_close(together, torch.cat([first, second]), rtol=1e-5, atol=1e-5)


def test_span_and_image_mismatches_raise_clear_errors(model, image_ids, pixels, nq) -> None:
    with pytest.raises(ValueError, match="1 image span.*0 image.*pass pixel_values"):
        model(input_ids=image_ids)
    with pytest.raises(ValueError, match="1 image span.*2 image"):
        model(input_ids=image_ids, pixel_values=torch.cat([pixels, pixels]))
    short = torch.tensor([image_prompt(nq - 1, [1], [2])])
    with pytest.raises(ValueError, match=f"exactly {nq} positions"):
        model(input_ids=short, pixel_values=pixels)
    unclosed = torch.tensor([[1, IMG] + [IMG_PAD] * nq + [2]])
    with pytest.raises(ValueError, match="<img>"):
        model(input_ids=unclosed, pixel_values=pixels)
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=model.get_input_embeddings()(image_ids), pixel_values=pixels)
    with torch.no_grad():
        cache = model(input_ids=image_ids[:, :2]).cache
    with pytest.raises(ValueError, match="after the prefill"):
        model(input_ids=image_ids[:, 2:], pixel_values=pixels, cache=cache)


def test_text_only_input_needs_no_pixels(model) -> None:
    ids = torch.tensor([[872, 198, 40, 1079, 264]])
    with torch.no_grad():
        out = model(input_ids=ids)
    assert out.logits.shape == (1, 5, 151936)


def test_vision_every_step_runs_the_tower_on_text_only_input_without_changing_anything(
    tiny_model_dir: Path, auto_model_cls, image_ids, pixels
) -> None:
    """What sharded training switches on (``set_vision_every_step``): a text-only forward runs ``visual`` on a
    blank image inside the splice, with a bit-identical loss and LM gradients, and zero gradients for the vision
    parameters that train (the resampler, as in full fine-tuning); a batch with images is unchanged."""
    text_ids = torch.tensor([[872, 198, 40, 1079, 264, 151645, 198]])

    def run(every_step: bool, ids: torch.Tensor, pixel_values: torch.Tensor | None):
        m = auto_model_cls.from_pretrained(tiny_model_dir).train()
        for name, p in m.transformer.visual.named_parameters():  # full mode: ViT frozen, resampler trains
            p.requires_grad_(name.startswith("attn_pool.") and not name.endswith("pos_embed"))
        m.transformer.set_vision_every_step(every_step)
        calls = []
        m.transformer.visual.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape))
        torch.manual_seed(0)
        loss = m(input_ids=ids, pixel_values=pixel_values, labels=ids).loss
        loss.backward()
        grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
        return loss.detach(), grads, calls

    loss_off, grads_off, calls_off = run(False, text_ids, None)
    loss_on, grads_on, calls_on = run(True, text_ids, None)
    size = auto_model_cls.from_pretrained(tiny_model_dir).config.visual["image_size"]
    assert calls_off == [] and calls_on == [torch.Size([1, 3, size, size])]
    assert torch.equal(loss_on, loss_off)
    vision = [n for n in grads_on if n.startswith("transformer.visual.")]
    assert vision and all(n.startswith("transformer.visual.attn_pool.") for n in vision)
    for name, grad in grads_on.items():
        if name in vision:
            assert grads_off[name] is None and grad is not None and not grad.any(), name
        else:
            assert torch.equal(grad, grads_off[name]), name

    loss_img_off, grads_img_off, _ = run(False, image_ids, pixels)
    loss_img_on, grads_img_on, calls_img = run(True, image_ids, pixels)
    assert calls_img == [pixels.shape] and torch.equal(loss_img_on, loss_img_off)
    assert all(torch.equal(grads_img_on[n], g) for n, g in grads_img_off.items())


# ----------------------------------------------------------------------------------------------------------------
# 5. Generation
# ----------------------------------------------------------------------------------------------------------------


def test_generate_with_an_image_equals_a_manual_greedy_loop(model, image_ids, pixels) -> None:
    with torch.no_grad():
        generated = model.generate(
            input_ids=image_ids, pixel_values=pixels, max_new_tokens=4, do_sample=False, eos_token_id=None
        )
        ids = image_ids
        for _ in range(4):
            step = model(input_ids=ids, pixel_values=pixels, use_cache=False).logits[:, -1]
            ids = torch.cat([ids, step.argmax(dim=-1, keepdim=True)], dim=1)
    assert torch.equal(generated, ids)


def test_prepare_inputs_for_generation_passes_pixels_only_at_prefill(model, image_ids, pixels) -> None:
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache(config=model.config)
    first = model.prepare_inputs_for_generation(
        image_ids, cache=cache, pixel_values=pixels, is_first_iteration=True
    )
    assert first["pixel_values"] is pixels
    with torch.no_grad():
        model(input_ids=image_ids, pixel_values=pixels, cache=cache)
    later = model.prepare_inputs_for_generation(
        image_ids, cache=cache, pixel_values=pixels, next_sequence_length=1, is_first_iteration=False
    )
    assert "pixel_values" not in later and later["input_ids"].shape == (1, 1)


# ----------------------------------------------------------------------------------------------------------------
# 6. Dynamic NTK and logn scaling (inference only)
# ----------------------------------------------------------------------------------------------------------------


def test_ntk_alpha_and_base_follow_the_spec() -> None:
    for length in (1, 100, 2047, 2048):
        assert ntk_alpha(length, 2048) == 1.0
    for length, alpha in ((2049, 3.0), (4096, 3.0), (4097, 7.0), (8192, 7.0), (8193, 15.0)):
        assert ntk_alpha(length, 2048) == alpha
        expected = max(2 ** math.ceil(math.log2(length / 2048) + 1) - 1, 1)
        assert ntk_alpha(length, 2048) == expected
    assert ntk_base(10000.0, 1.0, 128) == 10000.0
    assert ntk_base(10000.0, 3.0, 128) == pytest.approx(10000 * 3 ** (128 / 126))


def test_logn_scale_follows_the_spec() -> None:
    assert torch.equal(logn_scale(0, 2048, 2048), torch.ones(2048))
    scale = logn_scale(2040, 20, 2048)
    for i, p in enumerate(range(2040, 2060)):
        expected = math.log(p + 1) / math.log(2048) if p + 1 > 2048 else 1.0
        assert scale[i].item() == pytest.approx(expected, rel=1e-6)


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory: pytest.TempPathFactory, auto_model_cls) -> QwenVLForCausalLM:
    path = make_tiny(tmp_path_factory.mktemp("tiny_seq16") / "model", seed=0, seq_length=16)
    return auto_model_cls.from_pretrained(path)


def test_extrapolation_is_inference_only_and_only_beyond_seq_length(short_context_model) -> None:
    m = short_context_model
    ids = torch.arange(1000, 1040).unsqueeze(0)
    with torch.no_grad():
        m.train()  # dropout is 0 in the tiny config, so train and eval differ only by NTK / logn
        train_short, train_long = m(input_ids=ids[:, :16]).logits, m(input_ids=ids).logits
        m.eval()
        eval_short, eval_long = m(input_ids=ids[:, :16]).logits, m(input_ids=ids).logits
    assert torch.equal(train_short, eval_short)
    # 40 tokens over a 16-token context: 2 ** ceil(log2(40 / 16) + 1) - 1 = 2 ** 3 - 1
    assert m.transformer._ntk_alpha == 7.0
    assert not torch.allclose(train_long, eval_long, atol=1e-4)
    torch.testing.assert_close(train_long[:, :16], m.train()(input_ids=ids[:, :16]).logits)


def test_decode_steps_keep_the_prefill_ntk_alpha(short_context_model) -> None:
    m = short_context_model.eval()
    ids = torch.arange(2000, 2030).unsqueeze(0)  # 20-token prefill and 30 in total: both use alpha 3
    with torch.no_grad():
        full = m(input_ids=ids).logits
        out = m(input_ids=ids[:, :20])
        assert m.transformer._ntk_alpha == 3.0
        pieces = [out.logits]
        for i in range(20, 30):
            out = m(input_ids=ids[:, i : i + 1], cache=out.cache)
            pieces.append(out.logits)
    assert m.transformer._ntk_alpha == 3.0
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# 7. Padding
# ----------------------------------------------------------------------------------------------------------------


def test_right_padded_batch_matches_each_row_alone(model, pixels, nq) -> None:
    row0 = image_prompt(nq, [872, 198], [198, 40, 1079])
    row1 = [872, 198, 40, 1079, 264, 3]
    length = max(len(row0), len(row1)) + 2
    pad = 151643
    batch = torch.tensor([row0 + [pad] * (length - len(row0)), row1 + [pad] * (length - len(row1))])
    mask = torch.tensor(
        [[1] * len(row0) + [0] * (length - len(row0)), [1] * len(row1) + [0] * (length - len(row1))]
    )
    with torch.no_grad():
        together = model(input_ids=batch, attention_mask=mask, pixel_values=pixels).logits
        alone0 = model(input_ids=torch.tensor([row0]), pixel_values=pixels).logits[0]
        alone1 = model(input_ids=torch.tensor([row1])).logits[0]
    torch.testing.assert_close(together[0, : len(row0)], alone0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together[1, : len(row1)], alone1, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(together).all()


def test_attention_mask_builder() -> None:
    assert build_attention_mask(None, 5, 0, torch.float32, torch.device("cpu")) == (None, True)
    assert build_attention_mask(torch.ones(2, 6), 1, 5, torch.float32, torch.device("cpu")) == (None, False)
    mask, causal = build_attention_mask(torch.tensor([[1, 1, 0]]), 3, 0, torch.float32, torch.device("cpu"))
    allowed = mask[0, 0] == 0
    assert not causal
    assert allowed.tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    with pytest.raises(ValueError, match="past \\+ current"):
        build_attention_mask(torch.ones(1, 3), 1, 5, torch.float32, torch.device("cpu"))


# ----------------------------------------------------------------------------------------------------------------
# Vision details
# ----------------------------------------------------------------------------------------------------------------


def test_resampler_attention_is_nn_multihead_attention() -> None:
    config = QwenVLConfig(hidden_size=128, num_attention_heads=4, kv_channels=32, visual={"output_dim": 128})
    ours = ResamplerAttention(config, 128, 4)
    reference = nn.MultiheadAttention(128, 4)  # sequence-first, as the original used it
    ours.load_state_dict(reference.state_dict())  # same parameter names and layout
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 128, generator=g) for n in (16, 9, 9))
    expected = reference(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1))[0].transpose(0, 1)
    for impl in ("sdpa", "eager"):
        config._attn_implementation = impl
        torch.testing.assert_close(ours(q, k, v), expected, rtol=1e-5, atol=1e-6)


def test_vision_in_proj_is_split_per_head() -> None:
    """Rows of ``in_proj`` are [head0: q k v, head1: q k v, ...]; regrouped as [Q; K; V] they drive a standard
    self-attention to the same output."""
    config = QwenVLConfig(hidden_size=128, num_attention_heads=4, kv_channels=32, visual={"output_dim": 128})
    width, heads = 64, 4
    ours = VisionAttention(config, width, heads)
    head_dim = width // heads
    regroup = torch.arange(3 * width).view(heads, 3, head_dim).transpose(0, 1).reshape(-1)
    reference = nn.MultiheadAttention(width, heads, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(ours.in_proj.weight[regroup])
        reference.in_proj_bias.copy_(ours.in_proj.bias[regroup])
        reference.out_proj.load_state_dict(ours.out_proj.state_dict())
    x = torch.randn(2, 16, width, generator=torch.Generator().manual_seed(0))
    expected = reference(x, x, x, need_weights=False)[0]
    for impl in ("sdpa", "eager"):
        config._attn_implementation = impl
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-6)


def test_sincos_table_layout() -> None:
    table = sincos_pos_table(16, 4)  # 4 x 4 grid, 8 channels per axis: [sin x4, cos x4]
    assert table.shape == (16, 16) and table.dtype == torch.float32
    omega = 1.0 / 10000 ** (torch.arange(4, dtype=torch.float32) / 4)
    h, w = 2, 3
    row = table[h * 4 + w]
    torch.testing.assert_close(row[:8], torch.cat([torch.sin(w * omega), torch.cos(w * omega)]))
    torch.testing.assert_close(row[8:], torch.cat([torch.sin(h * omega), torch.cos(h * omega)]))


def test_positional_table_resize_is_bicubic_fp32() -> None:
    table = torch.randn(256, 8).to(torch.bfloat16)
    resized = resize_pos_table(table, 1024)
    expected = nn.functional.interpolate(
        table.float().reshape(1, 16, 16, 8).permute(0, 3, 1, 2),
        size=(32, 32),
        mode="bicubic",
        align_corners=False,
    )
    assert resized.dtype == torch.bfloat16 and resized.shape == (1024, 8)
    assert torch.equal(resized, expected.permute(0, 2, 3, 1).reshape(1024, 8).to(torch.bfloat16))
    assert resize_pos_table(table, 256) is table


def test_image_transform_resizes_and_normalises() -> None:
    from PIL import Image

    from qwenvl_train.model import CLIP_MEAN, CLIP_STD

    pixels = image_transform(56)(Image.new("RGB", (100, 70), (255, 0, 128)))
    assert pixels.shape == (3, 56, 56) and pixels.dtype == torch.float32
    expected = [(c / 255 - m) / s for c, m, s in zip((255, 0, 128), CLIP_MEAN, CLIP_STD, strict=True)]
    torch.testing.assert_close(pixels.mean(dim=(1, 2)), torch.tensor(expected), rtol=1e-5, atol=1e-5)
    grey = image_transform(56)(Image.new("L", (20, 20), 10))
    assert grey.shape == (3, 56, 56)
