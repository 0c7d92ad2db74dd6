"""Obtain the genuine Qwen vocabulary ``qwen.tiktoken`` from the PyPI wheel ``dashscope``.

The file is identical to the one shipped with every Qwen(-VL) checkpoint. We never download model
weights; this one file comes from the package registry, is verified by sha256 and cached per user::

    qwenvl-train vocab --dest ./my-model
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import UserError
from .outputs import write_output

VOCAB_FILE = "qwen.tiktoken"
VOCAB_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
VOCAB_SIZE_BYTES = 2_561_218
WHEEL_MEMBER = "dashscope/resources/qwen.tiktoken"
PACKAGE = "dashscope"


class VocabError(UserError, RuntimeError):
    """The vocabulary could not be obtained or failed verification."""


def cache_dir() -> Path:
    """Per-user cache folder (``$QWENVL_TRAIN_CACHE`` or ``$XDG_CACHE_HOME/qwenvl-train``)."""
    env = os.environ.get("QWENVL_TRAIN_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qwenvl-train"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path) -> None:
    """Raise :class:`VocabError` unless ``path`` is the genuine vocabulary."""
    got = sha256_of(path)
    if got != VOCAB_SHA256:
        raise VocabError(f"{path}: sha256 {got} does not match the genuine qwen.tiktoken ({VOCAB_SHA256})")


def _download_wheel(dest: Path, package: str) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        package,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise VocabError(
            f"could not download the '{package}' wheel from the package registry "
            f"({detail[-1] if detail else 'no output'}); put a genuine qwen.tiktoken at "
            f"{cache_dir() / VOCAB_FILE} or pass a model directory that has one"
        )
    return wheels[0]


def extract_from_wheel(wheel: Path, out: Path) -> Path:
    """Extract ``qwen.tiktoken`` from a dashscope wheel to ``out`` and verify it."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(WHEEL_MEMBER)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise VocabError(f"{wheel}: no {WHEEL_MEMBER} inside ({exc})") from exc
    if hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
        raise VocabError(f"{wheel}: {WHEEL_MEMBER} has the wrong sha256; refusing to use it")
    write_output(out, data)
    return out


def ensure_vocab(dest: str | Path | None = None, package: str = PACKAGE) -> Path:
    """Return the path of a verified ``qwen.tiktoken``, fetching it once into the user cache.

    Args:
        dest: optional folder to copy the file into (e.g. a model directory).
        package: pip requirement to download (``dashscope`` or ``dashscope==X``).

    Raises:
        VocabError: when the registry cannot be reached or the file's hash is wrong.
    """
    cached = cache_dir() / VOCAB_FILE
    if cached.exists():
        try:
            verify(cached)
        except VocabError:
            cached.unlink()
    if not cached.exists():
        with tempfile.TemporaryDirectory() as tmp:
            wheel = _download_wheel(Path(tmp), package)
            extract_from_wheel(wheel, cached)
    if dest is None:
        return cached
    target = Path(dest) / VOCAB_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or sha256_of(target) != VOCAB_SHA256:
        shutil.copyfile(cached, target)
    return target
