"""A full disk while saving: recognised whatever raised it, and one line naming the folder, the bytes needed and
free, and where the trained weights are."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import qwenvl_train.training.run as run
from qwenvl_train.disk_full import DiskFullError, is_disk_full, resume_advice, saving
from qwenvl_train.tokenizer import QwenVLTokenizer
from train_fixtures import cpu_args, write_dataset


def is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def test_a_full_disk_is_recognised_whatever_raised_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0") from inner
    except RuntimeError as exc:
        assert is_disk_full(exc)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("bad value"))
    if is_char_device("/dev/full"):  # the real thing: every write fails with ENOSPC (not in every container)
        with pytest.raises(Exception) as info:  # noqa: PT011 - safetensors raises its own type
            save_file({"w": torch.zeros(1024, 1024)}, "/dev/full")
        assert is_disk_full(info.value)


@pytest.mark.parametrize("weights", [None, "out/checkpoint-20"])
def test_saving_ends_a_full_disk_with_one_line(tmp_path: Path, weights: str | None) -> None:
    advice = lambda: resume_advice(weights)  # noqa: E731
    with pytest.raises(DiskFullError) as info, saving(tmp_path, "the final adapter", 3 << 20, advice):
        raise OSError(errno.ENOSPC, "No space left on device")
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(
        f"{tmp_path}: No space left on device while saving the final adapter (it needs about 3.0 MB, "
    )
    assert "free); what was half-written is not marked complete and is never loaded or resumed from; " in line
    if weights:
        assert line.endswith(
            "the trained weights are in out/checkpoint-20 (the last complete checkpoint): free some space and "
            "resume with --resume_from_checkpoint auto"
        )
    else:
        assert line.endswith("no complete checkpoint holds trained weights: free some space and train again")
    with pytest.raises(PermissionError), saving(tmp_path, "x"):  # anything else passes through
        raise PermissionError(errno.EACCES, "Permission denied")


# ---------------------------------------------------------------- a real run whose disk fills up while it saves
@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


def fill_the_disk_when_saving_into(monkeypatch: pytest.MonkeyPatch, folder_name: str) -> None:
    """The tokenizer's files (what the disk estimate once left out) hit a full disk when written into a folder
    named ``folder_name``."""
    save_vocabulary = QwenVLTokenizer.save_vocabulary

    def full(self, save_directory, filename_prefix=None):  # noqa: ANN001, ANN202
        if Path(save_directory).name == folder_name:
            raise OSError(
                errno.ENOSPC, "No space left on device", str(Path(save_directory) / "qwen.tiktoken")
            )
        return save_vocabulary(self, save_directory, filename_prefix)

    monkeypatch.setattr(QwenVLTokenizer, "save_vocabulary", full)


@pytest.mark.parametrize(
    ("folder_name", "save_steps", "what", "after"),
    [
        (".final-save", "1", "the final adapter", "the trained weights are in {out}/checkpoint-2 (the last complete "
         "checkpoint): free some space and resume with --resume_from_checkpoint auto"),
        (".final-save", None, "the final adapter", "no checkpoint holds the trained weights (--save_strategy steps "
         "keeps some): free some space and train again"),
        ("checkpoint-2", "1", "checkpoint-2", "the trained weights are in {out}/checkpoint-1 (the last complete "
         "checkpoint): free some space and resume with --resume_from_checkpoint auto"),
    ],
)  # fmt: skip
def test_a_full_disk_while_saving_ends_with_one_line(
    tiny_model_dir: Path,
    data_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    folder_name: str,
    save_steps: str | None,
    what: str,
    after: str,
) -> None:
    out = tmp_path / "out"
    saves = ("--save_strategy", "steps", "--save_steps", save_steps) if save_steps else ()
    fill_the_disk_when_saving_into(monkeypatch, folder_name)
    assert (
        run.main(cpu_args(tiny_model_dir, data_file, out, "--tune", "lora", "--max_steps", "2", *saves)) == 1
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("qwenvl-train: ")]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(
        f"qwenvl-train: {out}: No space left on device while saving {what} (it needs about "
    ), lines[0]
    assert lines[0].endswith(after.format(out=out)), lines[0]
    assert not (out / "trainer_state.json").exists()  # no final save looks complete
