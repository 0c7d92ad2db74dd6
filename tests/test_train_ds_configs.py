"""The shipped DeepSpeed/FSDP configs: valid for DeepSpeed's own parser once the Trainer fills its values, no
unknown keys, no scheduler block (so ``--lr_scheduler_type`` is the schedule that runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwenvl_train.training.arguments import parse_args

ROOT = Path(__file__).resolve().parents[1]
DS_CONFIGS = sorted((ROOT / "ds_configs").glob("zero*.json"))


def known_top_level_keys() -> set[str]:
    """Every top-level key name DeepSpeed's config module defines, plus the sections parsed by their own models."""
    import deepspeed.runtime.constants as constants

    keys = {v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str)}
    return keys | {"zero_optimization", "activation_checkpointing", "flops_profiler", "comms_logger", "tensorboard",
                   "wandb", "csv_monitor", "aio", "compression_training", "data_efficiency", "checkpoint"}  # fmt: skip


def filled_config(path: Path, tiny_model_dir: Path, tmp_path: Path, *extra: str):  # noqa: ANN201
    """What the Trainer hands DeepSpeed: every "auto" replaced from the arguments and the model."""
    from transformers import AutoConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    args = parse_args(
        ["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path), "--use_cpu", "--bf16",
         "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "4", *extra]
    ).training  # fmt: skip

    class Model:
        config = AutoConfig.from_pretrained(tiny_model_dir)

    hf_config = HfTrainerDeepSpeedConfig(json.loads(path.read_text()))
    hf_config.trainer_config_process(args)
    hf_config.trainer_config_finalize(args, Model(), num_training_steps=100)
    return hf_config.config, args


@pytest.mark.parametrize("path", DS_CONFIGS, ids=lambda p: p.name)
def test_deepspeed_config_is_valid_with_trainer_values(
    path: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from deepspeed.runtime.config import DeepSpeedConfig

    raw = json.loads(path.read_text())
    unknown = set(raw) - known_top_level_keys()
    assert not unknown, f"{path.name}: unknown top-level keys {unknown}"
    assert "scheduler" not in raw, "a scheduler block would override --lr_scheduler_type"

    config, args = filled_config(path, tiny_model_dir, tmp_path)
    assert "auto" not in json.dumps(config), config
    parsed = DeepSpeedConfig(config)  # DeepSpeed's own parser; raises on bad values and unknown nested keys
    assert parsed.train_micro_batch_size_per_gpu == 2
    assert parsed.gradient_accumulation_steps == 4
    assert parsed.gradient_clipping == args.max_grad_norm
    assert parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    stage = raw["zero_optimization"]["stage"]
    assert parsed.zero_optimization_stage == stage
    if stage == 3:
        assert parsed.zero_config.gather_16bit_weights_on_model_save
    if (
        "optimizer" in raw
    ):  # the offload config: DeepSpeed's CPU Adam with the command line's hyper-parameters
        params = config["optimizer"]["params"]
        assert params["lr"] == args.learning_rate and params["weight_decay"] == 0.1
        assert params["betas"] == [0.9, 0.95]


def test_unknown_keys_are_caught(tmp_path: Path) -> None:
    assert "zero_optimisation" not in known_top_level_keys()
    assert {"train_batch_size", "bf16", "zero_optimization", "gradient_clipping"} <= known_top_level_keys()


def test_fsdp2_config_is_accepted_by_the_trainer_arguments(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = ROOT / "ds_configs" / "fsdp2.json"
    args = parse_args(
        ["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path), "--fsdp", "--fsdp_config",
         str(path)]
    ).training  # fmt: skip
    assert args.fsdp
    assert args.fsdp_config["version"] == 2
    assert args.fsdp_config["transformer_layer_cls_to_wrap"] == ["QwenVLBlock", "VisionBlock"]
    import qwenvl_train.model.modeling as modeling
    import qwenvl_train.model.vision as vision

    assert hasattr(modeling, "QwenVLBlock") and hasattr(vision, "VisionBlock")
