"""GPTQ both ways on the tiny model: an adapter trained on an Int4 (GPTQ) checkpoint merges into the 16-bit one,
and ``--quantize gptq`` writes the Qwen-VL-Chat-Int4 layout back, which loads, generates and trains again:
Int4 -> fine-tune -> merge -> Int4."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from export_fixtures import assert_merge_exact, sample_batch, train_adapter
from gptq_fixtures import dequantize_v1, int4_quantize_config
from qwenvl_train.cli import main as cli_main
from qwenvl_train.export import MergeError, merge
from qwenvl_train.export.quantize import QUANTIZED_LAYERS, images_for_calibration
from qwenvl_train.training import train
from train_fixtures import cpu_args, write_dataset

pytest.importorskip("gptqmodel")
os.environ.setdefault("GPTQMODEL_DISABLE_PACK_EXT", "1")  # skips a ~1 min kernel compile on CPU
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")

INT4_CONFIG = int4_quantize_config(128)  # quantize_config.json of Qwen-VL-Chat-Int4


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def gptq_adapter(gptq_model_dir: Path, data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Q-LoRA adapter trained on the GPTQ checkpoint (as on Qwen-VL-Chat-Int4)."""
    return train_adapter(gptq_model_dir, data_file, tmp_path_factory.mktemp("int4") / "adapter", "qlora")


@pytest.fixture(scope="module")
def merged_fp32(gptq_adapter: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GPTQ adapter merged into the fp32 checkpoint the GPTQ one was quantized from."""
    return merge(gptq_adapter, tmp_path_factory.mktemp("merged") / "fp32", base=tiny_model_dir)


def test_gptq_adapter_needs_the_16bit_checkpoint(
    gptq_adapter: Path, gptq_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = (
        f"{gptq_model_dir} holds gptq 4-bit weights (like Qwen-VL-Chat-Int4), which cannot hold the adapter's "
        "update: pass --base DIR with the 16-bit checkpoint it was quantized from (e.g. Qwen-VL-Chat for "
        "Qwen-VL-Chat-Int4), and add --quantize gptq --calib-data FILE for an Int4 result"
    )
    assert cli_main(["merge", "--adapter", str(gptq_adapter), "--output", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"
    with pytest.raises(MergeError) as caught:
        merge(gptq_adapter, tmp_path / "out", base=gptq_model_dir)
    assert str(caught.value) == message
    assert list(tmp_path.iterdir()) == []


def test_gptq_adapter_merges_into_the_given_fp32_or_bf16_checkpoint(
    gptq_adapter: Path, merged_fp32: Path, tiny_model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    assert_merge_exact(merged_fp32, tiny_model_dir, gptq_adapter, sample_batch(tiny_model_dir, data_file))

    bf16_base = tmp_path / "Qwen-VL-Chat-bf16"
    bf16_base.mkdir()
    for path in tiny_model_dir.iterdir():
        (bf16_base / path.name).write_bytes(path.read_bytes())
    base_weights = {k: v.bfloat16() for k, v in load_file(str(tiny_model_dir / "model.safetensors")).items()}
    save_file(base_weights, str(bf16_base / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((bf16_base / "config.json").read_text())
    (bf16_base / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}))

    out = merge(gptq_adapter, tmp_path / "merged-bf16", base=bf16_base)  # dtype: the base's
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    merged = load_file(str(out / "model.safetensors"))
    exact = load_file(str(merged_fp32 / "model.safetensors"))
    adapted = {f"transformer.h.{i}.{m}.weight" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.w1",
                                                                           "mlp.w2")}  # fmt: skip
    assert merged.keys() == base_weights.keys()
    for name, tensor in merged.items():
        assert tensor.dtype == torch.bfloat16
        assert torch.equal(tensor, base_weights[name]) == (name not in adapted), name
        torch.testing.assert_close(tensor.float(), exact[name], rtol=1e-2, atol=1e-4)


def test_quantize_gptq_writes_the_int4_layout_which_loads_generates_and_trains(
    gptq_adapter: Path,
    merged_fp32: Path,
    tiny_model_dir: Path,
    data_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = merge(gptq_adapter, tmp_path / "Int4", base=tiny_model_dir, quantize="gptq", calib_data=[data_file])
    assert "merge: calibrating GPTQ on 9 of 9 conversations" in capsys.readouterr().out

    base_config = json.loads((tiny_model_dir / "config.json").read_text())
    assert json.loads((out / "config.json").read_text()) == {
        **base_config, "torch_dtype": "float16", "quantization_config": {**INT4_CONFIG, "quant_method": "gptq"}
    }  # fmt: skip
    assert json.loads((out / "quantize_config.json").read_text()) == INT4_CONFIG
    state = load_file(str(out / "model.safetensors"))
    exact = load_file(str(merged_fp32 / "model.safetensors"))
    quantized = {f"transformer.h.{i}.{m}" for i in range(2) for m in QUANTIZED_LAYERS}
    packed = {f"{layer}.{part}" for layer in quantized for part in ("qweight", "qzeros", "scales", "g_idx")}
    assert set(state) == (set(exact) - {f"{layer}.weight" for layer in quantized}) | packed
    assert {n for n in state if n.endswith(".bias") and n.startswith("transformer.h.")} == {
        "transformer.h.0.attn.c_attn.bias", "transformer.h.1.attn.c_attn.bias"
    }  # fmt: skip
    for name, tensor in state.items():
        integer = name.rsplit(".", 1)[1] in ("qweight", "qzeros", "g_idx")
        assert tensor.dtype == (torch.int32 if integer else torch.float16), name
    for layer in sorted(quantized):
        weight = exact[f"{layer}.weight"]
        n_out, n_in = weight.shape
        qzeros = state[f"{layer}.qzeros"]
        assert state[f"{layer}.qweight"].shape == (n_in // 8, n_out)
        assert qzeros.shape == (n_in // 128, n_out // 8) and state[f"{layer}.scales"].shape == (
            n_in // 128,
            n_out,
        )
        assert torch.equal(state[f"{layer}.g_idx"], torch.arange(n_in, dtype=torch.int32) // 128)
        assert torch.equal(
            qzeros, torch.full_like(qzeros, 0x77777777)
        )  # symmetric: zero point 8, stored as 7
        restored = dequantize_v1(
            state[f"{layer}.qweight"], qzeros, state[f"{layer}.scales"], state[f"{layer}.g_idx"]
        )
        error = (restored - weight).norm() / weight.norm()
        assert error < 0.25, (layer, error)  # measured 0.13-0.19; zero points off by one give 0.41

    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert info == {
        "missing_keys": set(),
        "unexpected_keys": set(),
        "mismatched_keys": set(),
        "error_msgs": [],
    }
    assert model.dtype == torch.float16
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = torch.tensor(
        [tokenizer.encode("<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n")]
    )
    generated = [
        model.generate(prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False) for _ in range(2)
    ]
    assert generated[0].shape == (1, prompt.shape[1] + 4) and torch.equal(generated[0], generated[1])

    trainer = train(cpu_args(out, data_file, tmp_path / "again", "--tune", "qlora", "--max_steps", "1"))
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    base = trainer.model.get_base_model()
    assert sorted(
        n.removesuffix(".base_layer") for n, m in base.named_modules() if isinstance(m, BaseQuantLinear)
    ) == sorted(quantized)
    assert (tmp_path / "again" / "adapter_model.safetensors").is_file()


def test_calibration_forwards_get_their_images(tiny_model_dir: Path, data_file: Path) -> None:
    """optimum calls the model with ids alone; the hook gives each calibration sample its own images back."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    from qwenvl_train.export.quantize import calibration_samples

    samples = calibration_samples(model, tokenizer, [data_file])
    assert [("pixel_values" in s) for s in samples] == [True] * 8 + [False]
    first = samples[0]
    with torch.no_grad():
        expected = model(**first).logits
        other_image = model(**{**first, "pixel_values": samples[1]["pixel_values"]}).logits
        with images_for_calibration(model, samples):
            got = model(input_ids=first["input_ids"], attention_mask=first["attention_mask"]).logits
    assert torch.equal(got, expected) and not torch.equal(other_image, expected)


def test_group_size_is_128_unless_a_layer_is_narrower() -> None:
    from torch import nn

    from qwenvl_train.export.quantize import group_size_for

    def model(*widths: int) -> nn.Module:
        root = nn.Module()
        root.transformer = nn.Module()
        root.transformer.h = nn.ModuleList([nn.Linear(width, 8) for width in widths])
        return root

    assert group_size_for(model(4096, 11008)) == 128  # Qwen-VL-Chat's blocks
    assert group_size_for(model(128, 256)) == 128
    assert group_size_for(model(128, 96)) == 32
