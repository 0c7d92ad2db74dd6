"""make_tiny writes a small random checkpoint that looks exactly like an original Qwen-VL-Chat directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qwenvl_train.tiny import make_tiny
from qwenvl_train.vocab import VOCAB_SHA256, sha256_of

REFERENCE = Path(__file__).resolve().parent / "reference" / "qwen-vl-chat"


def test_directory_has_the_original_layout(tiny_model_dir: Path) -> None:
    names = sorted(p.name for p in tiny_model_dir.iterdir())
    assert names == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "qwen.tiktoken",
        "tokenizer_config.json",
    ]
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen"
    assert config["architectures"] == ["QWenLMHeadModel"]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_qwen.QWenLMHeadModel"
    assert config["vocab_size"] == 151936 and config["torch_dtype"] == "float32"
    assert (
        config["visual"]["n_queries"] == 16 and config["visual"]["output_dim"] == config["hidden_size"] == 128
    )
    assert config["kv_channels"] * config["num_attention_heads"] == config["hidden_size"]
    reference_config = json.loads((REFERENCE / "config.json").read_text())
    assert set(reference_config) - {"_name_or_path"} <= set(config)
    assert json.loads((tiny_model_dir / "generation_config.json").read_text()) == json.loads(
        (REFERENCE / "generation_config.json").read_text()
    )
    tokenizer_config = json.loads((REFERENCE / "tokenizer_config.json").read_text())
    assert json.loads((tiny_model_dir / "tokenizer_config.json").read_text()) == {
        **tokenizer_config,
        "model_max_length": 2048,
    }
    assert sha256_of(tiny_model_dir / "qwen.tiktoken") == VOCAB_SHA256


def test_weights_are_float32_and_complete(tiny_model_dir: Path) -> None:
    weights = load_file(str(tiny_model_dir / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())
    assert weights["transformer.wte.weight"].shape == (151936, 128)
    assert weights["transformer.visual.attn_pool.pos_embed"].shape == (16, 128)
    assert weights["transformer.visual.positional_embedding"].shape == (256, 64)
    assert len([n for n in weights if n.startswith("transformer.h.")]) == 2 * 8


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    state = torch.random.get_rng_state()
    a = load_file(str(make_tiny(tmp_path / "a", seed=5) / "model.safetensors"))
    b = load_file(str(make_tiny(tmp_path / "b", seed=5) / "model.safetensors"))
    c = load_file(str(make_tiny(tmp_path / "c", seed=6) / "model.safetensors"))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["transformer.h.0.attn.c_attn.weight"], c["transformer.h.0.attn.c_attn.weight"])


def test_overrides_reach_config_and_model(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    path = make_tiny(tmp_path / "m", seed=0, seq_length=16, visual={"n_queries": 4}, torch_dtype="bfloat16")
    config = json.loads((path / "config.json").read_text())
    assert (
        config["seq_length"] == 16 and config["visual"]["n_queries"] == 4 and config["visual"]["width"] == 64
    )
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert model.dtype == torch.bfloat16  # torch_dtype of config.json decides, not the bf16/fp16/fp32 flags
    assert model.transformer.visual.attn_pool.query.shape == (4, 128)
    ids = torch.tensor([[872, 151857, 151859, 151859, 151859, 151859, 151858, 198]])
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=torch.randn(1, 3, 56, 56)).logits
    assert logits.shape == (1, 8, 151936)


def test_rejects_an_impossible_override(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="perfect square"):
        make_tiny(tmp_path / "bad", visual={"n_queries": 5})


def test_demo_preset_and_overrides_on_top(tmp_path: Path) -> None:
    out = make_tiny(tmp_path / "demo", preset="demo", visual={"layers": 1})
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]) == (128, 512, 2)
    assert config["visual"] == {
        **config["visual"],
        "image_size": 56,
        "width": 128,
        "layers": 1,
        "n_queries": 16,
    }
    weights = load_file(out / "model.safetensors")
    assert weights["transformer.wte.weight"].shape == (151936, 128)
    assert weights["transformer.visual.positional_embedding"].shape == (256, 128)
    assert weights["transformer.visual.attn_pool.query"].shape == (16, 128)
    assert not any(".resblocks.1." in name for name in weights)  # the override won over the preset's 2 layers
    assert (
        json.loads((make_tiny(tmp_path / "tiny", seed=0) / "config.json").read_text())["visual"]["width"]
        == 64
    )


def test_demo_preset_draws_unit_scale_vision_positions(tmp_path: Path) -> None:
    """The demo model's ViT position embedding starts at std 2.5 (the tiny model keeps the original's width**-0.5),
    and the same seed still gives the same weights."""
    demo = load_file(make_tiny(tmp_path / "demo", preset="demo") / "model.safetensors")
    positions = demo["transformer.visual.positional_embedding"]
    assert 2.3 < positions.std().item() < 2.7
    tiny = load_file(make_tiny(tmp_path / "tiny") / "model.safetensors")
    assert tiny["transformer.visual.positional_embedding"].std().item() < 0.2
    again = load_file(make_tiny(tmp_path / "again", preset="demo") / "model.safetensors")
    assert all(torch.equal(again[name], tensor) for name, tensor in demo.items())  # deterministic
