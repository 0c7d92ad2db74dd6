"""The genuine vocabulary: fetched from the dashscope wheel, verified, cached; clear errors otherwise."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from qwenvl_train import vocab


def test_genuine_vocab_hash_and_size(vocab_file: Path) -> None:
    assert vocab_file.stat().st_size == vocab.VOCAB_SIZE_BYTES
    assert vocab.sha256_of(vocab_file) == vocab.VOCAB_SHA256


def test_ensure_vocab_copies_into_dest(vocab_file: Path, tmp_path: Path) -> None:
    out = vocab.ensure_vocab(dest=tmp_path / "model")
    assert out == tmp_path / "model" / "qwen.tiktoken"
    assert out.read_bytes() == vocab_file.read_bytes()


def test_wheel_with_wrong_file_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "dashscope-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(vocab.WHEEL_MEMBER, b"aGVsbG8= 0\n")
    with pytest.raises(vocab.VocabError, match="wrong sha256"):
        vocab.extract_from_wheel(wheel, tmp_path / "out" / "qwen.tiktoken")
    assert not (tmp_path / "out" / "qwen.tiktoken").exists()


def _wheel_holding(path: Path, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(vocab.WHEEL_MEMBER, data)
    return path


def test_corrupted_cache_is_replaced(
    vocab_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("QWENVL_TRAIN_CACHE", str(cache))
    cache.mkdir()
    (cache / "qwen.tiktoken").write_bytes(b"not the vocabulary\n")
    downloads = []

    def download(dest: Path, package: str) -> Path:  # the registry, serving a genuine wheel
        downloads.append(package)
        return _wheel_holding(dest / "dashscope-1-py3-none-any.whl", vocab_file.read_bytes())

    monkeypatch.setattr(vocab, "_download_wheel", download)
    assert vocab.ensure_vocab() == cache / "qwen.tiktoken"
    assert downloads == ["dashscope"]  # the corrupted file was not trusted: fetched again
    assert (cache / "qwen.tiktoken").read_bytes() == vocab_file.read_bytes()
    vocab.ensure_vocab()
    assert downloads == ["dashscope"]  # the genuine file, now cached, is used as it is


def test_corrupted_cache_with_a_bad_download_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("QWENVL_TRAIN_CACHE", str(cache))
    cache.mkdir()
    (cache / "qwen.tiktoken").write_bytes(b"not the vocabulary\n")
    monkeypatch.setattr(
        vocab, "_download_wheel", lambda dest, package: _wheel_holding(dest / "bad.whl", b"aGVsbG8= 0\n")
    )
    with pytest.raises(vocab.VocabError, match="wrong sha256"):
        vocab.ensure_vocab()
    assert not (cache / "qwen.tiktoken").exists()  # neither the corrupted file nor the bad one is left


def test_no_registry_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWENVL_TRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty folder: nothing to find
    with pytest.raises(vocab.VocabError, match="could not download the 'dashscope' wheel"):
        vocab.ensure_vocab()
    assert not (tmp_path / "cache" / "qwen.tiktoken").exists()
