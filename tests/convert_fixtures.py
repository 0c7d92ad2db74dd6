"""Helpers for the tests/test_convert_*.py files: pictures of known sizes, source files, and running
``qwenvl-train convert`` and ``check-data`` in-process (imported by the test modules; not collected itself)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from qwenvl_train.cli import main


def picture(path: Path, width: int, height: int, colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    """A ``width`` x ``height`` picture (PNG, or JPEG for a .jpg name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path)
    return path


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def convert(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    """``qwenvl-train convert ARGS`` in-process: exit status, stdout, stderr."""
    code = main(["convert", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_samples(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def values(samples: list[dict[str, Any]]) -> list[list[tuple[str, str]]]:
    """Each sample's turns as ``(from, value)`` pairs."""
    return [[(t["from"], t["value"]) for t in s["conversations"]] for s in samples]


def check_data(capsys: pytest.CaptureFixture[str], data: Path, model_dir: Path) -> str:
    """``qwenvl-train check-data DATA --model MODEL`` must pass (exit 0, no error); its report."""
    code = main(["check-data", str(data), "--model", str(model_dir), "--model_max_length", "4096"])
    out = capsys.readouterr().out
    assert code == 0, out
    return out
