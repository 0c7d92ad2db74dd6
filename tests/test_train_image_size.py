"""``train --image_size N`` and LoRA targets by part (``llm``, ``resampler``, ``vit``) on the tiny model (56 px):
the parse-time check, the expansion against the module list, dropout on module adapters only, the vision learning
rate, the size recorded in every folder a run writes, and the merged folder at 112 px."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from export_fixtures import assert_merge_exact
from qwenvl_train.data import ConversationDataset, DataCollator
from qwenvl_train.export import merge
from qwenvl_train.model.parameter_names import expand_lora_targets
from qwenvl_train.model.vision import resize_pos_table
from qwenvl_train.training import train
from qwenvl_train.training.arguments import parse_args
from qwenvl_train.training.prepare import prepare_model, split_lora_targets
from qwenvl_train.training.summary import settings_line
from qwenvl_train.training.trainer import split_vision_groups
from train_fixtures import cpu_args, one_line, write_dataset

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
VIT_MODULES = [f"transformer.visual.transformer.resblocks.{i}.{m}" for i in range(2)
               for m in ("attn.in_proj", "attn.out_proj", "mlp.c_fc", "mlp.c_proj")]  # fmt: skip


@pytest.mark.parametrize(
    ("size", "near"), [("100", "98 or 112"), ("42", "56"), ("0", "56"), ("57", "56 or 70")]
)
def test_image_size_off_the_patch_grid_is_one_line_at_parse_time(
    tmp_path: Path, size: str, near: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--image_size", size, "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        f"qwenvl-train train: error: --image_size must be a multiple of the patch size 14 and at least 56, got "
        f"{size} (try {near}) (`qwenvl-train train --help` lists the options)"
    )
    args = parse_args(["--image_size", "112", "--tune", "lora", "--output_dir", str(tmp_path)])
    assert args.model.image_size == 112
    assert " image_size=112 bf16=" in settings_line(args)
    assert "image_size" not in settings_line(parse_args(["--output_dir", str(tmp_path)]))


def test_part_names_expand_against_the_module_list(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    names = linear + [name for name, _ in model.named_parameters()]
    assert expand_lora_targets(["llm"], names) == ["c_attn", "attn.c_proj", "w1", "w2"]
    assert expand_lora_targets(["resampler"], names) == [
        "attn_pool.attn.in_proj_weight", "attn_pool.attn.out_proj", "attn_pool.kv_proj"]  # fmt: skip
    # A resampler whose widths agree has no kv_proj (an Identity, as in the original): nothing to adapt there.
    no_kv = [name for name in names if not name.startswith("transformer.visual.attn_pool.kv_proj")]
    assert expand_lora_targets(["resampler"], no_kv) == [
        "attn_pool.attn.in_proj_weight",
        "attn_pool.attn.out_proj",
    ]
    assert expand_lora_targets(["vit"], names) == VIT_MODULES
    # Names other than parts stay as given, in order, without repeats.
    assert expand_lora_targets(["w1", "llm", "attn_pool.query"], names) == [
        "w1", "c_attn", "attn.c_proj", "w2", "attn_pool.query"]  # fmt: skip
    modules, params = split_lora_targets(model, ["llm", "resampler", "vit"])
    assert params == ["attn_pool.attn.in_proj_weight"]
    assert modules == [
        "c_attn",
        "attn.c_proj",
        "w1",
        "w2",
        "attn_pool.attn.out_proj",
        "attn_pool.kv_proj",
        *VIT_MODULES,
    ]


def test_dropout_on_module_adapters_only_and_vision_lr_on_vision_adapters(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    args = parse_args(["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path), "--tune", "lora",
                       "--lora_target", "llm", "resampler", "vit", "--lora_dropout", "0.1", "--use_cpu"])  # fmt: skip
    model = prepare_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), args)
    from peft.tuners.lora import LoraLayer, ParamWrapper

    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    params = [name for name, m in layers.items() if isinstance(m, ParamWrapper)]
    assert params == ["base_model.model.transformer.visual.attn_pool.attn"]
    for name, layer in layers.items():
        dropout = layer.lora_dropout["default"]
        if name in params:
            assert isinstance(dropout, nn.Identity), name
        else:
            assert isinstance(dropout, nn.Dropout) and dropout.p == 0.1, name
    # (peft nests the out_proj adapter inside the parameter wrapper of attn_pool.attn: ``attn.base_layer.out_proj``)
    adapted = {name.removeprefix("base_model.model.").replace(".base_layer", "") for name in layers}
    resampler = {f"transformer.visual.attn_pool.{n}" for n in ("attn", "attn.out_proj", "kv_proj")}
    assert resampler | set(VIT_MODULES) <= adapted
    assert "lora_dropout=0.1(module targets; 0 on parameter targets)" in settings_line(
        args, parameter_adapters=True
    )

    # --vision_lr: every trainable vision tensor (the adapters of the ViT and of the resampler) in its own group.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = split_vision_groups(torch.optim.AdamW(trainable, lr=1e-4), model, vision_lr=1e-5)
    vision = {id(p) for n, p in model.named_parameters() if p.requires_grad and ".visual." in n}
    assert len(vision) == 2 * (3 + len(VIT_MODULES))  # lora_A and lora_B of each vision adapter
    assert [(g["lr"], {id(p) for p in g["params"]} == vision) for g in optimizer.param_groups] == [
        (1e-4, False), (1e-5, True)]  # fmt: skip


@pytest.mark.parametrize(
    "sharding",
    [["--deepspeed", "ds_configs/zero3.json"], ["--fsdp_config", "ds_configs/fsdp2.json", "--fsdp"]],
    ids=["zero3", "fsdp"],
)
def test_parameter_lora_under_zero3_or_fsdp_is_refused_while_parsing(
    tmp_path: Path, sharding: list[str]
) -> None:
    """A real process (DeepSpeed and FSDP set-up leave state behind), as the other sharding checks."""
    argv = [sys.executable, "-m", "qwenvl_train", "train", "--use_cpu", "--tune", "lora", "--lora_target", "llm",
            "resampler", "--model_name_or_path", str(tmp_path / "no-model"), "--output_dir", str(tmp_path / "out"),
            *sharding]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}, cwd=ROOT,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert one_line(proc.stderr) == (
        "qwenvl-train: --lora_target resampler: a parameter LoRA (the resampler's fused "
        "attn_pool.attn.in_proj_weight) cannot be sharded by ZeRO-3 or FSDP, which replace the parameter peft wraps; "
        "use DDP or ZeRO-2, or name attn_pool.attn.out_proj attn_pool.kv_proj instead"
    )


def test_position_tables_follow_the_size_as_the_original_get_abs_pos(tiny_model_dir: Path) -> None:
    """At 112 px the ViT runs on an 8 x 8 grid: its 16 x 16 table resized bicubically (fp32, align_corners False),
    what the original ``get_abs_pos`` computes, here written out with torch's own call."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    table = model.transformer.visual.positional_embedding.detach()
    grid = table.float().reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False)
    assert torch.equal(resize_pos_table(table, 64), expected.permute(0, 2, 3, 1).reshape(64, -1))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), image_size=112)


def batch_at(model_dir: Path, data: Path, image_size: int) -> dict[str, torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = ConversationDataset.from_files([str(data)], tokenizer, n_queries=16, image_size=image_size)
    return DataCollator()([dataset[0], dataset[len(dataset) - 1]])


def test_lora_at_112_records_the_size_and_merges_into_the_original_layout(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "adapter"
    trainer = train(cpu_args(tiny_model_dir, data_file, out, "--tune", "lora", "--image_size", "112",
                             "--lora_target", "llm", "resampler", "--max_steps", "2", "--learning_rate", "2e-2",
                             "--save_strategy", "steps", "--save_steps", "1"))  # fmt: skip
    printed = capsys.readouterr().out
    assert (
        "image_size=112" in printed and "lora_dropout=0.05(module targets; 0 on parameter targets)" in printed
    )
    assert trainer.train_dataset[0]["pixel_values"].shape == (1, 3, 112, 112)
    for folder in (out, out / "checkpoint-1", out / "checkpoint-2"):
        assert json.loads((folder / "visual_config.json").read_text()) == {"image_size": 112}, folder
        assert not (folder / "config.json").exists()
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["target_parameters"] == ["attn_pool.attn.in_proj_weight"]
    assert sorted(adapter_config["target_modules"]) == sorted(
        ["c_attn", "attn.c_proj", "w1", "w2", "attn_pool.attn.out_proj", "attn_pool.kv_proj"]
    )
    trained = load_file(str(out / "adapter_model.safetensors"))
    assert any("attn_pool.attn.lora_B" in name and t.abs().sum() > 0 for name, t in trained.items())

    merged = tmp_path / "merged"
    merge(out, merged)
    base_config = json.loads((tiny_model_dir / "config.json").read_text())
    merged_config = json.loads((merged / "config.json").read_text())
    assert merged_config["visual"] == {**base_config["visual"], "image_size": 112}
    assert {k: v for k, v in merged_config.items() if k != "visual"} == {
        k: v for k, v in base_config.items() if k != "visual"}  # fmt: skip
    batch = batch_at(tiny_model_dir, data_file, 112)
    # The base reads 56 from its config.json: at 112 it is the base with the recorded size, as chat/eval load it.
    base_at_112 = tmp_path / "base112"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(base_at_112)
    config = json.loads((base_at_112 / "config.json").read_text())
    (base_at_112 / "config.json").write_text(
        json.dumps({**config, "visual": {**config["visual"], "image_size": 112}})
    )
    assert_merge_exact(merged, base_at_112, out, batch)
    # The parameter LoRA is folded into in_proj_weight under the original name; every key is the base's.
    base_state = load_file(str(tiny_model_dir / "model.safetensors"))
    merged_state = load_file(str(merged / "model.safetensors"))
    assert set(merged_state) == set(base_state)
    for name in (
        "attn_pool.attn.in_proj_weight",
        "attn_pool.attn.out_proj.weight",
        "attn_pool.kv_proj.weight",
    ):
        name = f"transformer.visual.{name}"
        assert not torch.equal(merged_state[name], base_state[name]), name

    from qwenvl_train.inference.loading import load_for_inference

    loaded, _ = load_for_inference(str(out), device="cpu", dtype="fp32")
    assert loaded.config.image_size == 112 and loaded.transformer.visual.image_size == 112


def test_full_run_at_112_writes_the_size_in_every_config(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "full"
    train(cpu_args(tiny_model_dir, data_file, out, "--tune", "full", "--image_size", "112", "--max_steps", "1",
                   "--save_strategy", "steps", "--save_steps", "1"))  # fmt: skip
    for folder in (out, out / "checkpoint-1"):
        assert json.loads((folder / "config.json").read_text())["visual"]["image_size"] == 112, folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "sharding",
    [
        ["--deepspeed", str(ROOT / "ds_configs" / "zero3.json")],
        ["--fsdp", "--fsdp_config", str(ROOT / "ds_configs" / "fsdp2.json")],
    ],
    ids=["zero3", "fsdp2"],
)
def test_vit_module_adapters_at_112_under_zero3_and_fsdp2(
    sharding: list[str], tiny_model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    """Two processes under torchrun (gloo, CPU), as tests/test_train_distributed.py runs them: LoRA on the language
    model and every ViT block at 112 px trains, and the adapter saved from the shards holds every ViT adapter,
    trained, and records the size."""
    from train_fixtures import cpu_env, free_port

    out = tmp_path / "out"
    worker = Path(__file__).with_name("train_dist_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(worker), *cpu_args(tiny_model_dir, data_file, out, "--tune", "lora", "--image_size", "112",
                                  "--lora_target", "llm", "vit", "--ddp_backend", "gloo", "--bf16", "false",
                                  "--max_steps", "2", "--learning_rate", "2e-2", "--per_device_train_batch_size", "1",
                                  *sharding)]  # fmt: skip
    env = {**cpu_env(), "PROBE_FILE": str(tmp_path / "probe")}
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    adapter = load_file(str(out / "adapter_model.safetensors"))
    vit_b = [name for name in adapter if ".resblocks." in name and "lora_B" in name]
    assert len(vit_b) == len(VIT_MODULES)
    assert all(adapter[name].abs().sum() > 0 for name in vit_b)
    assert json.loads((out / "visual_config.json").read_text()) == {"image_size": 112}
