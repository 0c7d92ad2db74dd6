"""Shared fixtures: a scan cache of the session's own, the genuine vocabulary, a tiny random model directory built
by the project, and a model directory holding only what check-data reads besides the tokenizer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def dev_left_as_found() -> Iterator[None]:
    """The ``/dev`` entries the suite could touch (:data:`dev_guard.WATCHED`) are what they were when it started:
    a test that replaced one (``/dev/full`` with a regular file, the ``/dev/stdout`` symlink) fails the session,
    naming it. Repair such an entry as root: ``rm /dev/full && mknod -m 666 /dev/full c 1 7``, or
    ``ln -sf /proc/self/fd/1 /dev/stdout``."""
    from dev_guard import changes, record

    before = record()
    yield
    changed = changes(before, record())
    if changed:
        pytest.fail("the test session changed /dev: " + "; ".join(changed), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def scan_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Scans are cached in a folder of this test session, not the user's cache (torchrun children inherit it)."""
    import os

    folder = tmp_path_factory.mktemp("scan-cache")
    previous = os.environ.get("QWENVL_TRAIN_SCAN_CACHE")
    os.environ["QWENVL_TRAIN_SCAN_CACHE"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["QWENVL_TRAIN_SCAN_CACHE"]
    else:
        os.environ["QWENVL_TRAIN_SCAN_CACHE"] = previous


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


@pytest.fixture(scope="session")
def gptq_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model laid out exactly like Qwen-VL-Chat-Int4 (tests/gptq_fixtures.py): the decoder blocks' linears
    in auto-gptq's 4-bit v1 packing, group size 128, quantize_config.json; the rest fp16. Loading it needs
    gptqmodel, as the real one does."""
    pytest.importorskip("gptqmodel")
    import os

    from gptq_fixtures import write_int4_checkpoint

    os.environ.setdefault("GPTQMODEL_DISABLE_PACK_EXT", "1")  # skips a ~1 min kernel compile on CPU
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")

    return write_int4_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("gptq") / "Qwen-VL-Chat-Int4")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the ``config.json`` check-data reads from a model directory (n_queries 16, image size 56); the
    tests pass the tokenizer directly."""
    d = tmp_path_factory.mktemp("model")
    (d / "config.json").write_text(
        json.dumps({"model_type": "qwen", "visual": {"n_queries": 16, "image_size": 56}})
    )
    return d
