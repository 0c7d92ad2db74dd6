"""A full disk while saving: recognised whatever raised it, and one line naming the folder, the bytes needed and
free, and where the trained weights are."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import qwenvl_train.training.run as run
from qwenvl_train.disk_full import DiskFullError, is_disk_full, resume_advice, saving
from qwenvl_train.tokenizer import QwenVLTokenizer
from train_fixtures import cpu_args, write_dataset

#: Saved on a 64 KiB tmpfs in a mount namespace of its own: safetensors' "write aside and rename" meets ENOSPC.
FILL_A_TMPFS = """
import sys, torch
from safetensors.torch import save_file
from qwenvl_train.disk_full import is_disk_full
try:
    save_file({"w": torch.zeros(256, 1024)}, sys.argv[1] + "/w.safetensors")
except Exception as exc:
    print("raised", type(exc).__name__, "disk full" if is_disk_full(exc) else f"not disk full: {exc!r}")
else:
    print("did not raise")
"""


def on_a_full_tmpfs(folder: Path) -> subprocess.CompletedProcess[str] | str:
    """Run :data:`FILL_A_TMPFS` with a 64 KiB tmpfs mounted on ``folder`` in a new mount namespace (as root, or as
    an ordinary user in a user namespace of its own), so the mount is never seen outside it and goes with the
    process. Returns the finished process, or why no such mount can be made here.

    A file system image needs a loop mount, which needs the same privilege as a tmpfs, so it is no fallback.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        return "no unshare(1) here"
    script = 'mount -t tmpfs -o size=64k qwenvl-full "$1" && exec "$2" -c "$3" "$1"'
    tried = []
    for namespaces in (["--mount"], ["--user", "--map-root-user", "--mount"]):
        if namespaces == ["--mount"] and os.geteuid() != 0:
            continue
        done = subprocess.run(
            [unshare, *namespaces, "sh", "-c", script, "sh", str(folder), sys.executable, FILL_A_TMPFS],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.stdout.startswith(("raised", "did not raise")):
            return done
        tried.append(
            f"unshare {' '.join(namespaces)}: {done.stderr.strip().splitlines()[-1:] or done.returncode}"
        )
    return "cannot mount a tmpfs here (" + "; ".join(str(t) for t in tried) + ")"


def test_a_full_disk_is_recognised_whatever_raised_it() -> None:
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


def test_a_real_full_file_system_is_recognised(tmp_path: Path) -> None:
    """A real full file system (never /dev/full: saving renames a temporary file over its target, which as root
    replaced the device with a regular file)."""
    folder = tmp_path / "full"
    folder.mkdir()
    done = on_a_full_tmpfs(folder)
    if isinstance(done, str):
        pytest.skip(f"{done}; the OSError(ENOSPC) paths are tested without it")
    assert done.stdout.strip() in ("raised SafetensorError disk full", "raised OSError disk full"), (
        done.stdout + done.stderr[-2000:]
    )
    assert not os.path.ismount(folder)  # the mount stayed in its namespace
    assert list(folder.iterdir()) == []


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
