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

from qwenvl_train.training.disk_full import DiskFullError, is_disk_full, saving


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
    with (
        pytest.raises(DiskFullError) as info,
        saving(tmp_path, "the final adapter", 3 << 20, lambda: weights),
    ):
        raise OSError(errno.ENOSPC, "No space left on device")
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(f"{tmp_path}: disk full while saving the final adapter (it needs about 3.0 MB, ")
    assert "free); nothing half-written is left visible; " in line
    if weights:
        assert line.endswith(
            "the trained weights are in out/checkpoint-20 (the last complete checkpoint): free some space and "
            "resume with --resume_from_checkpoint auto"
        )
    else:
        assert line.endswith("no complete checkpoint holds trained weights: free some space and train again")
    with pytest.raises(PermissionError), saving(tmp_path, "x"):  # anything else passes through
        raise PermissionError(errno.EACCES, "Permission denied")
