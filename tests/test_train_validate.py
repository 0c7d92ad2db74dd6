"""Checks on the options alone (training/validate.py), made while parsing: a bad combination fails before the
pre-flight checks, the data scan and the model load, with the same line and exit status as before (argparse's
usage errors exit 2; combinations that cannot go together exit 1 with one line)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import qwenvl_train.training.run as run
from qwenvl_train.cli import main
from qwenvl_train.errors import ConfigurationError
from qwenvl_train.training import parse_args
from train_fixtures import one_line, write_dataset

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
FREEZE_WITH_ADAPTERS = (
    "--freeze_vit applies to --tune full; with adapters, choose what trains with --lora_target "
    "(e.g. attn_pool.attn.out_proj) and --modules_to_save (e.g. attn_pool)"
)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), n_samples=2)


@pytest.fixture
def nothing_after_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every error here must come from parsing: before the pre-flight checks, the scan and any load."""

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("went past the option checks")

    for name in ("preflight", "load_tokenizer", "build_datasets", "load_model"):
        monkeypatch.setattr(run, name, fail)


def test_freeze_flag_with_adapters_fails_before_anything_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], nothing_after_parsing: None
) -> None:
    """Neither the model folder nor the data exists: the option error still wins, in well under a second of work
    (it was found only after the scan and the model load)."""
    argv = ["train", "--tune", "lora", "--freeze_vit", "false", "--model_name_or_path", str(tmp_path / "no-model"),
            "--data_path", str(tmp_path / "no-data.json"), "--output_dir", str(tmp_path / "out")]  # fmt: skip
    start = time.perf_counter()
    assert main(argv) == 1
    assert time.perf_counter() - start < 3
    assert one_line(capsys.readouterr().err) == f"qwenvl-train: {FREEZE_WITH_ADAPTERS}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--tune", "qlora", "--freeze_resampler", "true"], "--freeze_resampler applies to --tune full;"),
        (["--tune", "lora", "--freeze_llm"], "--freeze_llm applies to --tune full;"),
        (["--freeze_vit", "--freeze_resampler", "--freeze_llm"],
         "--freeze_vit, --freeze_resampler and --freeze_llm together leave nothing to train"),
    ],
)  # fmt: skip
def test_freeze_flags_against_tune(tmp_path: Path, argv: list[str], expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_args([*argv, "--output_dir", str(tmp_path)])
    assert str(info.value).startswith(expected)
    # The defaults are fine in every mode; so is the flag at its default value, given explicitly.
    for tune in ("full", "lora", "qlora"):
        parse_args(["--tune", tune, "--freeze_vit", "true", "--output_dir", str(tmp_path)])


@pytest.mark.parametrize(
    "sharding",
    [
        ["--deepspeed", "ds_configs/zero3.json"],
        ["--fsdp_config", "ds_configs/fsdp2.json", "--fsdp"],
    ],
    ids=["zero3", "fsdp"],
)
def test_vision_cache_with_zero3_or_fsdp_fails_while_parsing(tmp_path: Path, sharding: list[str]) -> None:
    """A real process (DeepSpeed and FSDP set-up leave state behind): exit 1, one line, although the model
    folder does not exist (the pre-flight check would have said so first)."""
    argv = [sys.executable, "-m", "qwenvl_train", "train", "--use_cpu", "--vision_cache", str(tmp_path / "cache"),
            "--model_name_or_path", str(tmp_path / "no-model"), "--output_dir", str(tmp_path / "out"), *sharding]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert one_line(proc.stderr) == (
        "qwenvl-train: --vision_cache cannot be used with ZeRO-3 or FSDP: the sharded tower must run on every rank "
        "at every step; use DDP or ZeRO-2"
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--bf16", "true"], "--bf16 needs a CUDA GPU and this machine has none: add --use_cpu true --bf16 false"),
        (["--fp16"], "--fp16 needs a CUDA GPU and this machine has none: add --use_cpu true --fp16 false"),
        (["--ddp_backend", "nccl"], "--ddp_backend nccl needs CUDA GPUs and this machine has none: use --ddp_backend gloo"),
    ],
)  # fmt: skip
def test_gpu_only_options_without_cuda(
    tiny_model_dir: Path,
    data_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    nothing_after_parsing: None,
    extra: list[str],
    expected: str,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["--model_name_or_path", str(tiny_model_dir), "--data_path", str(data_file)]
    argv += ["--output_dir", str(tmp_path / "out"), *extra]
    assert main(["train", *argv]) == 1
    assert one_line(capsys.readouterr().err).startswith(f"qwenvl-train: {expected}")
    if extra[0] == "--bf16":  # bf16 on the CPU, asked for explicitly, is allowed
        assert parse_args([*argv, "--use_cpu", "true"]).training.bf16


def test_quant_needs_qlora(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["--tune", "lora", "--quant", "nf4", "--output_dir", str(tmp_path)])
    assert info.value.code == 2
    assert "error: --quant nf4 needs --tune qlora" in capsys.readouterr().err
    assert (
        parse_args(["--tune", "qlora", "--quant", "nf4", "--output_dir", str(tmp_path)]).quant.quant == "nf4"
    )


def test_vision_lr_must_not_be_negative(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["--vision_lr=-1e-3", "--output_dir", str(tmp_path)])
    assert info.value.code == 2
    assert "error: --vision_lr must be 0 or more, got -0.001" in capsys.readouterr().err
    assert parse_args(["--vision_lr", "0", "--output_dir", str(tmp_path)]).training.vision_lr == 0.0
    assert parse_args(["--output_dir", str(tmp_path)]).training.vision_lr is None
