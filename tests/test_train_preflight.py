"""Before anything loads: one-line errors (exit status 1, once under torchrun, traceback only with
QWENVL_TRAIN_DEBUG=1), ``--config`` values checked like the command line, the checkpoint's kind and quantization
read from its own files, the output folder and the disk space. (The checks on the options alone, GPU-only options
among them: test_train_validate.py.)"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import qwenvl_train.training.preflight as preflight
import qwenvl_train.training.run as run
from qwenvl_train.cli import main
from qwenvl_train.disk_full import format_bytes
from qwenvl_train.errors import CheckpointError, ConfigurationError
from qwenvl_train.training import parse_args
from qwenvl_train.training.base_checkpoint import detect_kind, quant_method, resolve_kind
from train_fixtures import cpu_args, one_line, write_dataset

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), n_samples=2)


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every error here must come before the tokenizer, data or model load."""

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("loaded something before the pre-flight checks")

    monkeypatch.setattr(run, "load_tokenizer", fail)
    monkeypatch.setattr(run, "load_model", fail)


def light_copy(model_dir: Path, dest: Path, **generation: object) -> Path:
    """The checkpoint's small files (config, generation config with ``generation`` changes, tokenizer files)."""
    dest.mkdir(parents=True)
    for name in ("config.json", "tokenizer_config.json", "qwen.tiktoken"):
        shutil.copy(model_dir / name, dest / name)
    config = json.loads((model_dir / "generation_config.json").read_text())
    config.update(generation)
    (dest / "generation_config.json").write_text(
        json.dumps({k: v for k, v in config.items() if v is not None})
    )
    return dest


def test_known_error_is_one_line_exit_1_printed_by_rank_0_only(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    """A real process: exit status 1 and one line; RANK=1 prints nothing; QWENVL_TRAIN_DEBUG=1 adds the traceback."""
    model = light_copy(tiny_model_dir, tmp_path / "model")
    (model / "qwen.tiktoken").unlink()
    argv = [sys.executable, "-m", "qwenvl_train", "train", *cpu_args(model, data_file, tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert one_line(proc.stderr) == (
        f"qwenvl-train: {model}: no qwen.tiktoken (the tokenizer's vocabulary); fetch it with "
        f"`qwenvl-train vocab --dest {model}`"
    )
    assert not (tmp_path / "out").exists()


def test_rank_and_debug_decide_what_is_printed(
    tiny_model_dir: Path,
    data_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_model: None,
) -> None:
    model = light_copy(tiny_model_dir, tmp_path / "model")
    (model / "config.json").unlink()
    argv = ["train", *cpu_args(model, data_file, tmp_path / "out")]
    monkeypatch.setenv("RANK", "1")
    assert main(argv) == 1
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("QWENVL_TRAIN_DEBUG", "1")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "CheckpointError" in err
    assert err.splitlines()[-1] == f"qwenvl-train: {model}: no config.json, so not a model checkpoint folder"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("checkpoint_kind: Chat\n", "checkpoint_kind: 'Chat' is not one of auto, chat, base"),
        ("tune: qlora\nquant: GPTQ\n", "quant: 'GPTQ' is not one of auto, nf4, gptq"),
        ("model_max_length: long\n", "model_max_length: 'long' is not a valid int"),
        ("bf16: maybe\n", "bf16: 'maybe' is not a valid string_to_bool"),
        ("lora_r: [1, 2]\n", "lora_r: expected one value, got a list"),
        ("lora_rank: 8\n", "unknown option(s) lora_rank"),
    ],
)
def test_config_values_are_checked_like_the_command_line(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigurationError) as info:
        parse_args(["--config", str(config)])
    assert str(info.value) == f"{config}: {expected}"


def test_config_values_are_converted(tmp_path: Path) -> None:
    """PyYAML reads 1e-5 as a string: it becomes the float the command line would give; lists stay lists."""
    config = tmp_path / "run.yaml"
    config.write_text(
        "tune: lora\nlearning_rate: 1e-5\nlora_target: [w1, w2]\ncheckpoint_kind: base\nlora_r: 8\n"
    )
    args = parse_args(["--config", str(config), "--lora_r", "4"])
    assert args.training.learning_rate == 1e-5 and isinstance(args.training.learning_rate, float)
    assert args.lora.lora_target == ["w1", "w2"] and args.model.checkpoint_kind == "base"
    assert args.lora.lora_r == 4  # the command line wins


def test_kind_comes_from_the_checkpoint_not_its_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    chat = light_copy(tiny_model_dir, tmp_path / "Qwen-VL", chat_format="chatml")
    base = light_copy(tiny_model_dir, tmp_path / "Qwen-VL-Chat", chat_format="raw")
    unknown = light_copy(tiny_model_dir, tmp_path / "mystery", chat_format=None)
    assert (detect_kind(str(chat)), detect_kind(str(base)), detect_kind(str(unknown))) == (
        "chat",
        "base",
        None,
    )
    tokenizer_config = json.loads((unknown / "tokenizer_config.json").read_text())
    (unknown / "tokenizer_config.json").write_text(
        json.dumps({**tokenizer_config, "chat_template": "{{ x }}"})
    )
    assert detect_kind(str(unknown)) == "chat"
    assert resolve_kind(str(base), "chat") == "chat"  # the option decides when given


def test_undecidable_kind_asks_for_checkpoint_kind(
    tiny_model_dir: Path,
    data_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_model: None,
) -> None:
    model = light_copy(tiny_model_dir, tmp_path / "model", chat_format=None)
    argv = ["train", *cpu_args(model, data_file, tmp_path / "out"), "--tune", "lora"]
    assert main(argv) == 1
    assert one_line(capsys.readouterr().err) == (
        f"qwenvl-train: {model}: cannot tell whether this is a chat or a base checkpoint (no chat_format 'chatml' or "
        "'raw' in its generation_config.json): add --checkpoint_kind chat or --checkpoint_kind base"
    )
    with pytest.raises(CheckpointError):
        resolve_kind(str(model), "auto")
    # With the kind given, or modules_to_save chosen by hand, the kind is not needed.
    args = parse_args(argv[1:] + ["--checkpoint_kind", "base"])
    preflight.preflight(args)
    assert args.model.checkpoint_kind == "base"
    preflight.preflight(parse_args(argv[1:] + ["--modules_to_save", "lm_head"]))


def test_gptq_detected_from_config_or_quantize_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    plain = light_copy(tiny_model_dir, tmp_path / "plain")
    assert quant_method(str(plain)) is None
    in_config = light_copy(tiny_model_dir, tmp_path / "Qwen-VL-Chat")
    config = json.loads((in_config / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    (in_config / "config.json").write_text(json.dumps(config))
    assert quant_method(str(in_config)) == "gptq"
    auto_gptq = light_copy(tiny_model_dir, tmp_path / "int4-auto-gptq")
    (auto_gptq / "quantize_config.json").write_text(json.dumps({"bits": 4, "group_size": 128, "sym": True}))
    assert quant_method(str(auto_gptq)) == "gptq"


def test_output_folder_must_be_writable(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["train", *cpu_args(tiny_model_dir, data_file, blocker / "out")]) == 1
    assert (
        one_line(capsys.readouterr().err)
        == f"qwenvl-train: --output_dir {blocker / 'out'}: {blocker} is a regular file, not a folder"
    )


def tensor_count(model_dir: Path) -> int:
    """Weights in the checkpoint, counted by safetensors itself."""
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return sum(f.get_tensor(name).numel() for name in f.keys())


def test_disk_space_warning_names_both_figures(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = cpu_args(tiny_model_dir, data_file, tmp_path / "out")
    full = preflight.estimate_saves(
        parse_args([*base, "--save_strategy", "steps", "--save_total_limit", "3"])
    )
    params = tensor_count(tiny_model_dir)
    alongside = preflight.saved_alongside(str(tiny_model_dir))  # tokenizer and config files, in every save
    assert alongside > (tiny_model_dir / "qwen.tiktoken").stat().st_size
    assert full.final == params * 4 + alongside  # fp32 weights
    assert full.checkpoint == params * (4 + preflight.OPTIMIZER_BYTES) + alongside and full.checkpoints == 3
    assert full.total == full.final + 3 * full.checkpoint
    lora = preflight.estimate_saves(parse_args([*base, "--tune", "lora", "--checkpoint_kind", "chat"]))
    assert 0 < lora.final < full.final / 20 and lora.checkpoints == 0  # cpu_args: --save_strategy no
    assert lora.final > alongside  # the tokenizer files are most of a small adapter's save
    with_embeddings = preflight.estimate_saves(
        parse_args([*base, "--tune", "lora", "--checkpoint_kind", "base"])
    )
    assert with_embeddings.final > lora.final * 10  # wte and lm_head saved in full
    args = parse_args([*base, "--save_strategy", "steps", "--save_total_limit", "3"])
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: usage(0, 0, 5 << 20))
    warning = preflight.disk_space_warning(args)
    assert warning is not None and "has 5.0 MB free" in warning
    assert f"will save about {format_bytes(full.total)}" in warning
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: usage(0, 0, full.total))
    assert preflight.disk_space_warning(args) is None


def test_preflight_only_checks_and_exits(
    tiny_model_dir: Path,
    data_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_model: None,
) -> None:
    """What a launcher runs once before torchrun: the checks, one line, the exit status; nothing written."""
    argv = ["train", *cpu_args(tiny_model_dir, data_file, tmp_path / "out"), "--preflight_only"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == "qwenvl-train: pre-flight checks passed\n" and captured.err == ""
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([*argv, "--bf16", "true", "--use_cpu", "false"]) == 1
    assert "add --use_cpu true --bf16 false" in one_line(capsys.readouterr().err)


def test_kind_not_needed_when_modules_to_save_are_given(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    """A checkpoint whose files do not say chat or base trains with LoRA once --modules_to_save is chosen."""
    model = light_copy(tiny_model_dir, tmp_path / "model", chat_format=None)
    (model / "model.safetensors").symlink_to(tiny_model_dir / "model.safetensors")
    argv = cpu_args(model, data_file, tmp_path / "out", "--tune", "lora", "--lora_r", "2", "--max_steps", "1")
    trainer = run.train([*argv, "--modules_to_save", "lm_head"])
    trained = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("lm_head.modules_to_save" in name for name in trained)
    assert not any(".wte." in name for name in trained)


def test_option_errors_are_one_line_not_the_whole_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["--tune", "lora", "--lora_rank", "8"])
    assert info.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "qwenvl-train train: error: unrecognized arguments: --lora_rank 8 (`qwenvl-train train --help` lists the "
        "options)"
    )
