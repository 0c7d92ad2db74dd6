"""Full and LoRA fine-tuning of the tiny model on CPU, through ``train()`` exactly as the CLI runs it.

Each test checks what the mode promises: the loss falls, every trainable parameter changed, every frozen one is
bit-identical, and the output folder is self-contained and reloads to the trained weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from qwenvl_train.model.parameter_names import matches_target, part_of
from qwenvl_train.training import train
from qwenvl_train.training.prepare import count_parameters
from qwenvl_train.training.summary import format_count
from train_fixtures import cpu_args, logged_losses, write_dataset


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def base_weights(tiny_model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(tiny_model_dir / "model.safetensors"))


def test_lora_target_rule_is_written_once() -> None:
    """--lora_target / --modules_to_save name a module by its name or a dotted suffix: one function says so, and
    it is the only place in the package that tests a name that way (LoRA set-up and the disk estimate use it)."""
    assert matches_target("transformer.h.0.attn.c_proj", ["attn.c_proj"])
    assert matches_target("lm_head", ["lm_head"])
    assert not matches_target("transformer.h.0.mlp.c_proj", ["attn.c_proj"])
    assert not matches_target("transformer.h.0.attn.xc_proj", ["c_proj"])
    src = Path(__file__).resolve().parents[1] / "src" / "qwenvl_train"
    places = [(path.name, line.strip()) for path in sorted(src.rglob("*.py"))
              for line in path.read_text().splitlines() if 'endswith("." +' in line]  # fmt: skip
    assert places == [
        (
            "parameter_names.py",
            'return any(name == target or name.endswith("." + target) for target in targets)',
        )
    ]


def assert_self_contained(out: Path, adapter: bool = False) -> None:
    config = "adapter_config.json" if adapter else "config.json"
    for name in (config, "generation_config.json", "tokenizer_config.json", "qwen.tiktoken"):
        assert (out / name).is_file(), f"{name} missing from {out}"
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["chat_format"] == "chatml" and generation["pad_token_id"] == 151643
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.pad_token_id == 151643


def sample_batch(trainer) -> dict[str, torch.Tensor]:
    return trainer.data_collator([trainer.train_dataset[i] for i in range(2)])


def test_full_mode_trains_llm_and_resampler_with_vit_frozen(
    tiny_model_dir: Path, data_file: Path, base_weights: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    trainer = train(
        cpu_args(
            tiny_model_dir, data_file, out, "--tune", "full", "--max_steps", "16", "--learning_rate", "1e-3"
        )
    )

    losses = logged_losses(trainer)
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.5, losses

    model = trainer.model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    expected = {
        name
        for name in base_weights
        if part_of(name) in ("llm", "resampler") and not name.endswith("pos_embed")
    }
    assert trainable == expected
    for name, param in model.named_parameters():
        before = base_weights[name]
        if name in trainable:
            assert not torch.equal(param.detach(), before), f"{name} did not change"
        else:
            assert torch.equal(param.detach(), before), f"frozen {name} changed"
    assert any(part_of(n) == "vit" for n in base_weights) and not any(part_of(n) == "vit" for n in trainable)

    assert_self_contained(out)
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_lora_mode_trains_only_adapters_and_saves_them_all(
    tiny_model_dir: Path, data_file: Path, base_weights: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    trainer = train(
        cpu_args(
            tiny_model_dir, data_file, out, "--tune", "lora", "--max_steps", "16", "--learning_rate", "3e-3"
        )
    )

    losses = logged_losses(trainer)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.2, losses

    model = trainer.model
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    # Chat checkpoint: adapters on c_attn, attn.c_proj, w1, w2 of both blocks, nothing else.
    expected = {
        f"base_model.model.transformer.h.{i}.{module}.lora_{ab}.default.weight"
        for i in range(2)
        for module in ("attn.c_attn", "attn.c_proj", "mlp.w1", "mlp.w2")
        for ab in "AB"
    }
    assert set(trainable) == expected
    for name, param in model.named_parameters():
        if name in trainable:
            if ".lora_B." in name:  # B starts at zero; A moves only through B's gradient later on
                assert param.detach().abs().sum() > 0, f"{name} did not change"
        else:
            base_name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
            assert torch.equal(param.detach(), base_weights[base_name]), f"frozen {name} changed"

    adapter = load_file(str(out / "adapter_model.safetensors"))
    saved = {k: v for k, v in adapter.items()}
    assert len(saved) == len(trainable)
    for name, param in trainable.items():
        key = name.replace(".default", "")
        assert torch.equal(saved[key], param.detach()), key

    assert_self_contained(out, adapter=True)
    batch = sample_batch(trainer)
    model.eval()
    with torch.no_grad():
        expected_logits = model(**batch).logits
    from peft import AutoPeftModelForCausalLM

    for loader in (AutoPeftModelForCausalLM, AutoModelForCausalLM):
        reloaded = loader.from_pretrained(out).eval()
        with torch.no_grad():
            torch.testing.assert_close(reloaded(**batch).logits, expected_logits, rtol=0, atol=1e-5)


def test_lora_on_base_checkpoint_trains_and_saves_wte_lm_head_and_resampler_targets(
    tiny_model_dir: Path,
    data_file: Path,
    base_weights: dict[str, torch.Tensor],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base_dir = tmp_path / "qwen-vl-base"
    shutil.copytree(tiny_model_dir, base_dir)
    generation = json.loads((base_dir / "generation_config.json").read_text())
    (base_dir / "generation_config.json").write_text(json.dumps({**generation, "chat_format": "raw"}))
    out = tmp_path / "out"
    targets = ["c_attn", "attn.c_proj", "w1", "w2", "attn_pool.attn.out_proj", "attn_pool.kv_proj"]
    trainer = train(
        cpu_args(base_dir, data_file, out, "--tune", "lora", "--max_steps", "3", "--learning_rate", "1e-3",
                 "--lora_target", *targets, "--dataloader_num_workers", "2")  # workers load the images
    )  # fmt: skip

    model = trainer.model
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    full = {name for name in trainable if ".modules_to_save." in name}
    assert full == {
        "base_model.model.transformer.wte.modules_to_save.default.weight",
        "base_model.model.lm_head.modules_to_save.default.weight",
    }
    assert any("attn_pool.attn.out_proj.lora_A" in n for n in trainable)
    assert any("attn_pool.kv_proj.lora_A" in n for n in trainable)
    for name in full:
        base_name = name.removeprefix("base_model.model.").replace(".modules_to_save.default", "")
        assert not torch.equal(trainable[name].detach(), base_weights[base_name]), f"{name} did not change"

    # Parameter counts: the base model's weights once (wte/lm_head as their trainable copies, not also as the frozen
    # originals peft keeps), plus the LoRA matrices (rank 64: 64 * (in + out) per adapted layer).
    lora = {name: p for name, p in model.named_parameters() if ".lora_" in name}
    lora_layers = [m for m in model.modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    assert sum(p.numel() for p in lora.values()) == sum(
        64 * (m.in_features + m.out_features) for m in lora_layers
    )
    n_lora = sum(p.numel() for p in lora.values())
    n_full = base_weights["transformer.wte.weight"].numel() + base_weights["lm_head.weight"].numel()
    counts = count_parameters(model)
    assert counts.trainable == n_lora + n_full
    assert counts.total == sum(t.numel() for t in base_weights.values()) + n_lora
    summary = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("qwenvl-train: mode")
    )
    assert (
        f"trainable {format_count(counts.trainable)} of {format_count(counts.total)} parameters " in summary
    )

    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert len(adapter) == len(trainable)
    assert torch.equal(
        adapter["base_model.model.transformer.wte.weight"],
        trainable["base_model.model.transformer.wte.modules_to_save.default.weight"].detach(),
    )
    assert torch.equal(
        adapter["base_model.model.lm_head.weight"],
        trainable["base_model.model.lm_head.modules_to_save.default.weight"].detach(),
    )


@pytest.mark.parametrize(
    ("tune", "precision", "reentrant"),
    [("full", "fp32", False), ("lora", "bf16", True), ("qlora", "fp32", True)],
)
def test_activation_checkpointing_in_every_mode(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path, tune: str, precision: str, reentrant: bool
) -> None:
    """Checkpointed blocks still pass gradients to every trainable tensor, also with reentrant checkpointing
    under LoRA (which needs the frozen embeddings' output to require grad), in fp32 and bf16."""
    options = ["--tune", tune, "--max_steps", "1", "--warmup_steps", "0", "--learning_rate", "1e-2", "--activation_checkpointing",
               "--activation_checkpointing_kwargs", json.dumps({"use_reentrant": reentrant})]  # fmt: skip
    if precision == "bf16":
        options.append("--bf16")
    options += ["--lora_target", "c_attn", "w1"] if tune != "full" else ["--freeze_llm", "--no_freeze_vit"]
    trainer = train(cpu_args(tiny_model_dir, data_file, tmp_path / "out", *options))

    model = trainer.model
    assert (
        model.is_activation_checkpointing
        if tune == "full"
        else model.get_base_model().is_activation_checkpointing
    )
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable
    for name, param in trainable.items():
        if tune == "full":
            assert not torch.equal(param.detach().float(), base_weights_of(tiny_model_dir)[name]), name
        elif ".lora_B." in name:
            assert param.detach().abs().sum() > 0, f"{name} got no gradient through the checkpointed blocks"


_BASE_CACHE: dict[Path, dict[str, torch.Tensor]] = {}


def base_weights_of(model_dir: Path) -> dict[str, torch.Tensor]:
    if model_dir not in _BASE_CACHE:
        _BASE_CACHE[model_dir] = load_file(str(model_dir / "model.safetensors"))
    return _BASE_CACHE[model_dir]


def test_vision_lr_gives_the_tower_its_own_learning_rate(
    tiny_model_dir: Path, data_file: Path, base_weights: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    """--vision_lr 0 with the whole tower trainable: every transformer.visual weight keeps its value while the
    language model's change, and the logged learning rate is --learning_rate's schedule."""
    trainer = train(
        cpu_args(
            tiny_model_dir,
            data_file,
            tmp_path / "out",
            "--tune",
            "full",
            "--freeze_vit",
            "false",
            "--max_steps",
            "2",
            "--learning_rate",
            "1e-3",
            "--warmup_steps",
            "0",
            "--lr_scheduler_type",
            "constant",
            "--vision_lr",
            "0",
        )  # fmt: skip
    )
    lrs = {group["lr"] for group in trainer.optimizer.param_groups}
    assert lrs == {1e-3, 0.0}
    assert [entry["learning_rate"] for entry in trainer.state.log_history if "loss" in entry] == [1e-3, 1e-3]
    visual = changed = 0
    for name, param in trainer.model.named_parameters():
        assert param.requires_grad or name.endswith("pos_embed"), name
        if name.startswith("transformer.visual."):
            visual += 1
            assert torch.equal(param.detach(), base_weights[name]), f"{name} changed at --vision_lr 0"
        elif part_of(name) == "llm":
            changed += not torch.equal(param.detach(), base_weights[name])
    assert visual > 0 and changed == sum(part_of(n) == "llm" for n in base_weights)
