"""Q-LoRA on CPU: NF4 through bitsandbytes, and a GPTQ checkpoint (the tiny model in the exact Qwen-VL-Chat-Int4
layout, tests/gptq_fixtures.py). The loss falls, the adapters train, the 4-bit base and the vision tower stay
bit-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qwenvl_train.training import parse_args, train
from qwenvl_train.training.prepare import load_model
from train_fixtures import cpu_args, logged_losses, write_dataset

pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


def base_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the (unwrapped) base model, under its original name, adapters left out."""
    state = {}
    for name, tensor in model.state_dict().items():
        if (
            ".lora_" in name or ".quant_linear_module." in name
        ):  # adapters; peft's second handle on a GPTQ layer
            continue
        state[name.removeprefix("base_model.model.").replace(".base_layer.", ".")] = tensor.detach().clone()
    return state


def run_qlora(model_dir: Path, data_file: Path, out: Path, *extra: str):  # noqa: ANN201
    options = cpu_args(model_dir, data_file, out, "--tune", "qlora", "--max_steps", "16", "--learning_rate", "3e-3",
                       *extra)  # fmt: skip
    reference = base_state(load_model(parse_args(options)))  # what the 4-bit base looks like before training
    trainer = train(options)
    return trainer, reference


def check_trained(trainer, reference: dict[str, torch.Tensor], out: Path) -> None:  # noqa: ANN001
    losses = logged_losses(trainer)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.2, losses
    model = trainer.model
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in name for name in trainable)
    for name, param in trainable.items():
        if ".lora_B." in name:
            assert param.detach().abs().sum() > 0, f"{name} did not change"
    after = base_state(model)
    assert after.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(after[name].to(tensor.dtype), tensor), f"base tensor {name} changed"
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert {k for k in adapter} == {n.replace(".default", "") for n in trainable}


def test_qlora_nf4_trains_adapters_on_a_frozen_4bit_base(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    import bitsandbytes as bnb

    trainer, reference = run_qlora(tiny_model_dir, data_file, tmp_path / "out", "--quant", "nf4")
    model = trainer.model.get_base_model()
    quantized = {
        name.removesuffix(".base_layer")
        for name, m in model.named_modules()
        if isinstance(m, bnb.nn.Linear4bit)
    }
    assert quantized == {
        f"transformer.h.{i}.{m}"
        for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.w1", "mlp.w2", "mlp.c_proj")
    }
    layer = model.transformer.h[0].attn.c_attn.base_layer
    assert (
        layer.weight.quant_state.quant_type == "nf4" and layer.weight.quant_state.nested
    )  # double quantization
    assert layer.compute_dtype == torch.bfloat16
    assert not any(p.__class__.__name__ == "Params4bit" for p in model.transformer.visual.parameters())
    check_trained(trainer, reference, tmp_path / "out")


def test_int4_layout_loads_as_written(gptq_model_dir: Path, tiny_model_dir: Path, data_file: Path) -> None:
    """The Qwen-VL-Chat-Int4 layout (auto-gptq v1 packing, group size 128, quantize_config.json) loads for Q-LoRA
    with exactly the weights the files hold: its logits are those of the fp32 model given the dequantized weights
    (a zero point read without v1's offset, or a wrong group size, moves every weight)."""
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    from transformers import AutoModelForCausalLM

    from gptq_fixtures import dequantize_v1

    config = json.loads((gptq_model_dir / "config.json").read_text())
    assert config["quantization_config"] == {
        **json.loads((gptq_model_dir / "quantize_config.json").read_text()), "quant_method": "gptq"
    }  # fmt: skip
    assert config["quantization_config"]["group_size"] == 128
    args = parse_args(cpu_args(gptq_model_dir, data_file, gptq_model_dir / "unused", "--tune", "qlora"))
    model = load_model(args).eval()
    layers = {name: m for name, m in model.named_modules() if isinstance(m, BaseQuantLinear)}
    assert sorted(layers) == sorted(
        f"transformer.h.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.w1", "mlp.w2",
                                                             "mlp.c_proj")
    )  # fmt: skip
    assert all(m.group_size == 128 and m.bits == 4 for m in layers.values())

    files = load_file(str(gptq_model_dir / "model.safetensors"))
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    weights = {}
    for name in reference.state_dict():
        layer = name.removesuffix(".weight")
        if layer in layers:
            parts = (files[f"{layer}.{part}"] for part in ("qweight", "qzeros", "scales", "g_idx"))
            weights[name] = dequantize_v1(*parts)
        else:
            weights[name] = files[name].float()
    reference.load_state_dict(weights)
    ids = torch.tensor([[151644, 872, 198, 9707, 0, 151645, 198, 151644, 77091, 198]])
    with torch.no_grad():
        got, expected = model(input_ids=ids).logits.float(), reference(input_ids=ids).logits
    # measured: 0.005 at most (the kernel's fp16 dequantization); zero points misread by one give 1.6
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-2)


def test_qlora_on_a_gptq_checkpoint(gptq_model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    """Q-LoRA trains on the Int4 layout: adapters learn, the packed 4-bit base stays bit-identical."""
    assert (
        json.loads((gptq_model_dir / "config.json").read_text())["quantization_config"]["quant_method"]
        == "gptq"
    )
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    trainer, reference = run_qlora(gptq_model_dir, data_file, tmp_path / "out")  # --quant auto: gptq
    model = trainer.model.get_base_model()
    quantized = {
        name.removesuffix(".base_layer")
        for name, m in model.named_modules()
        if isinstance(m, BaseQuantLinear)
    }
    assert len(quantized) == 10 and all(name.startswith("transformer.h.") for name in quantized)
    assert "transformer.h.0.attn.c_attn.qweight" in reference
    check_trained(trainer, reference, tmp_path / "out")
