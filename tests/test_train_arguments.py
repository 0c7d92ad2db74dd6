"""Arguments of ``qwenvl-train train``: the original recipe's defaults, --config files, resume resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenvl_train.training.arguments import DEFAULT_LORA_TARGETS, build_parser, parse_args
from qwenvl_train.training.run_checkpoints import resolve_resume
from qwenvl_train.training.summary import settings_line


def test_defaults_follow_the_original_recipe(tmp_path: Path) -> None:
    args = parse_args(["--output_dir", str(tmp_path)])
    t = args.training
    assert args.model.tune == "full"
    assert (t.learning_rate, t.weight_decay, t.adam_beta2, t.warmup_steps) == (1e-5, 0.1, 0.95, 0.01)
    assert getattr(t.lr_scheduler_type, "value", t.lr_scheduler_type) == "cosine"
    assert args.data.model_max_length == 2048
    assert (args.model.freeze_vit, args.model.freeze_resampler, args.model.freeze_llm) == (True, False, False)
    assert (args.lora.lora_r, args.lora.lora_alpha, args.lora.lora_dropout) == (64, 16, 0.05)
    assert args.lora.lora_target == DEFAULT_LORA_TARGETS == ["c_attn", "attn.c_proj", "w1", "w2"]
    line = settings_line(args)
    assert "lr=1e-05" in line and "schedule=cosine" in line and "weight_decay=0.1" in line


@pytest.mark.parametrize(("tune", "lr"), [("full", 1e-5), ("lora", 1e-4), ("qlora", 1e-4)])
def test_learning_rate_default_depends_on_mode(tmp_path: Path, tune: str, lr: float) -> None:
    assert parse_args(["--tune", tune, "--output_dir", str(tmp_path)]).training.learning_rate == lr
    given = parse_args(["--tune", tune, "--learning_rate", "3e-4", "--output_dir", str(tmp_path)])
    assert given.training.learning_rate == 3e-4


def test_config_file_supplies_options_and_command_line_wins(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "tune: lora\nlora_r: 8\nlora_target: [c_attn, w1]\nmax_steps: 7\nfreeze_vit: true\n"
        "lr_scheduler_type: linear\ndata_path: [a.json, b.json]\noutput_dir: from_file\n"
    )
    args = parse_args(["--config", str(config), "--lora_r", "4", "--output_dir", str(tmp_path / "cli")])
    assert args.model.tune == "lora"
    assert args.training.learning_rate == 1e-4  # the mode's default, the mode coming from the file
    assert args.lora.lora_r == 4  # command line wins
    assert args.lora.lora_target == ["c_attn", "w1"]
    assert args.training.max_steps == 7
    assert args.data.data_path == ["a.json", "b.json"]
    assert args.training.output_dir == str(tmp_path / "cli")
    assert getattr(args.training.lr_scheduler_type, "value", None) == "linear"


def test_config_file_with_unknown_option_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("lora_rank: 8\n")
    with pytest.raises(ValueError, match="unknown option.*lora_rank"):
        parse_args(["--config", str(config)])


def test_help_documents_every_option() -> None:
    text = build_parser().format_help()
    for option in ("--tune", "--freeze_vit", "--lora_target", "--quant", "--checkpoint_kind", "--config"):
        assert option in text


def test_resume_auto_skips_a_checkpoint_whose_save_was_killed(tmp_path: Path) -> None:
    assert resolve_resume("auto", str(tmp_path)) is None  # nothing yet: start afresh
    for step in (5, 10, 15):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text("{}")
    # checkpoint-15 has no trainer_state.json: its save was interrupted.
    assert resolve_resume("auto", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert resolve_resume(str(tmp_path / "checkpoint-5"), str(tmp_path)) == str(tmp_path / "checkpoint-5")
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(str(tmp_path / "checkpoint-15"), str(tmp_path))
    assert resolve_resume(None, str(tmp_path)) is None


def test_example_yaml_config_parses(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[1] / "finetune" / "lora.yaml"
    args = parse_args(["--config", str(config), "--output_dir", str(tmp_path), "--bf16", "false"])
    assert args.model.tune == "lora" and args.lora.lora_r == 64 and args.training.learning_rate == 1e-4
    assert args.training.gradient_accumulation_steps == 8 and args.training.bf16 is False


DATA_OPTIONS = ["--model_max_length", "64", "--truncation", "cut_turns", "--on_error", "skip",
                "--label_policy", "reference", "--verify_images", "none", "--allow_bare_boxes",
                "--max_image_pixels", "123", "--image_timeout", "2.5"]  # fmt: skip


def test_train_and_check_data_take_the_same_data_options(tmp_path: Path) -> None:
    from qwenvl_train.cli import build_parser as cli_parser
    from qwenvl_train.data.options import DataOptions

    check = cli_parser().parse_args(["check-data", "d.json", "--model", "m", *DATA_OPTIONS])
    train = parse_args(["--output_dir", str(tmp_path), *DATA_OPTIONS])
    expected = DataOptions(64, "cut_turns", "skip", "reference", "none", True, 123, 2.5)
    assert DataOptions.from_namespace(check) == DataOptions.from_namespace(train.data) == expected
    # the same defaults, except that check-data decodes every image
    check = cli_parser().parse_args(["check-data", "d.json", "--model", "m"])
    train = parse_args(["--output_dir", str(tmp_path)])
    assert DataOptions.from_namespace(train.data) == DataOptions()
    assert DataOptions.from_namespace(check) == DataOptions(verify_images="full")
    with pytest.raises(SystemExit):
        cli_parser().parse_args(["check-data", "d.json", "--model", "m", "--truncation", "cut"])
    with pytest.raises(SystemExit):
        parse_args(["--output_dir", str(tmp_path), "--truncation", "cut"])


def test_data_options_are_checked_when_built_in_code() -> None:
    from qwenvl_train.data.options import DataOptions

    with pytest.raises(ValueError, match="truncation='cut': choose from drop, cut_turns"):
        DataOptions(truncation="cut")
    with pytest.raises(ValueError, match="model_max_length=0"):
        DataOptions(model_max_length=0)
