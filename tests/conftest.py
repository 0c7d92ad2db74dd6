"""Shared fixtures: the genuine vocabulary and a tiny random model directory built by the project."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def vocab_file() -> Path:
    """Path of the verified genuine ``qwen.tiktoken`` (fetched once from the dashscope wheel)."""
    from qwenvl_train.vocab import ensure_vocab

    return ensure_vocab()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen-VL checkpoint in the original on-disk format."""
    from qwenvl_train.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)
