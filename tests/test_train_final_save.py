"""The final save is atomic: a failure (or a kill) during it leaves no finished-looking model in --output_dir;
the next run cleans up and saves completely."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import qwenvl_train.training.run as run
from qwenvl_train.cli import main
from qwenvl_train.training import train
from qwenvl_train.training.help import help_path
from qwenvl_train.training.run_checkpoints import STAGING_NAME
from qwenvl_train.training.trainer import QwenVLTrainer
from train_fixtures import cpu_args, write_dataset


def test_failure_during_the_final_save_leaves_nothing_that_looks_finished(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_dataset(tmp_path / "data", n_samples=2)
    out = tmp_path / "out"
    args = cpu_args(tiny_model_dir, data, out, "--tune", "lora", "--lora_r", "2", "--max_steps", "1")
    real_save, real_final_save = QwenVLTrainer._save, run.save

    def save_then_run_out_of_space(self, output_dir=None, state_dict=None):  # noqa: ANN001, ANN202
        folder = Path(output_dir or self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 100)  # a truncated file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(QwenVLTrainer, "_save", save_then_run_out_of_space)
    with pytest.raises(OSError, match="No space left"):
        train(args)
    finished_looking = [
        "adapter_model.safetensors",
        "adapter_config.json",
        "config.json",
        "trainer_state.json",
    ]
    assert [name for name in finished_looking if (out / name).exists()] == []
    assert (
        out / STAGING_NAME / "adapter_model.safetensors"
    ).stat().st_size == 100  # the truncated file, aside

    monkeypatch.setattr(QwenVLTrainer, "_save", real_save)
    trainers: list[QwenVLTrainer] = []
    monkeypatch.setattr(run, "save", lambda trainer: (trainers.append(trainer), real_final_save(trainer)))
    monkeypatch.setenv("QWENVL_TRAIN_CACHE", str(tmp_path / "cache"))
    assert main(["train", *args]) == 0  # the command's exit status after a complete run
    assert (
        help_path().read_text().startswith("usage: qwenvl-train train")
    )  # `train --help` is instant from now on
    assert not (out / STAGING_NAME).exists()
    for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "qwen.tiktoken"):
        assert (out / name).is_file(), name
    saved = load_file(str(out / "adapter_model.safetensors"))
    trained = {
        n.replace(".default", ""): p for n, p in trainers[0].model.named_parameters() if p.requires_grad
    }
    assert saved.keys() == trained.keys() and saved
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, trained[name].detach())


def test_saved_weights_have_the_permissions_of_any_new_file(tmp_path: Path) -> None:
    """safetensors creates its files 0600; a checkpoint, the final adapter and a tiny model are readable as the
    umask allows (here 027: 0640), so a colleague or a serving account can load them."""
    from qwenvl_train.tiny import make_tiny

    data = write_dataset(tmp_path / "data", n_samples=2)
    previous = os.umask(0o027)
    try:
        model_dir = make_tiny(tmp_path / "tiny", seed=0)
        out = tmp_path / "out"
        train(
            cpu_args(model_dir, data, out, "--tune", "lora", "--lora_r", "2", "--max_steps", "1")
            + ["--save_strategy", "steps", "--save_steps", "1"]
        )
    finally:
        os.umask(previous)
    written = [
        model_dir / "model.safetensors",
        out / "checkpoint-1" / "adapter_model.safetensors",
        out / "adapter_model.safetensors",
    ]
    assert [oct(path.stat().st_mode & 0o777) for path in written] == ["0o640"] * 3
