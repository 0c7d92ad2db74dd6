"""The commands and code of README's "Use your fine-tuned model" section, run as written on the tiny model.

They run in a scratch folder holding ``data/`` (the repository's demo data), ``output_qwen`` (the tiny model, its
generation_config capped at a few new tokens) and ``output_qwen_lora`` (a LoRA adapter on it); the README's
``/models/Qwen-VL-Chat`` is that model too.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from qwenvl_train.cli import main

ROOT = Path(__file__).resolve().parents[1]


def section(title: str) -> str:
    """A README section by its heading (``## X`` or ``### X``), up to the next heading of level 2 or 3."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n{title}\n")
    match = re.compile(r"\n#{2,3} ").search(text, start + 1)
    return text[start : match.start() if match else None]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.fixture
def workspace(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    shutil.copytree(ROOT / "data", tmp_path / "data")
    model_dir = tmp_path / "output_qwen"
    model_dir.mkdir()
    for file in tiny_model_dir.iterdir():  # links, not copies: the weights are 160 MB
        (model_dir / file.name).symlink_to(file)
    generation = json.loads((tiny_model_dir / "generation_config.json").read_text())
    (model_dir / "generation_config.json").unlink()
    (model_dir / "generation_config.json").write_text(json.dumps({**generation, "max_new_tokens": 6}))
    torch.manual_seed(0)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=2, target_modules=["w1"])
    )
    lora.save_pretrained(tmp_path / "output_qwen_lora")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_commands_run(workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    commands = [
        line.split("  #")[0]
        for block in code_blocks(section("### Chat") + section("### Evaluate"), "bash")
        for line in block.splitlines()
        if line.startswith("qwenvl-train ")
    ]
    assert {shlex.split(c)[1] for c in commands} == {"chat", "eval"}
    for command in commands:
        argv = shlex.split(command.replace("/models/Qwen-VL-Chat", str(workspace / "output_qwen")))[1:]
        monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n"))  # for the interactive one
        assert main(argv) == 0, command
    out = capsys.readouterr().out
    assert "assistant> " in out and "evaluated 8 sample(s)" in out
    report = json.loads((workspace / "eval.json").read_text())
    assert (
        len(report["samples"]) == 8 and "acc@0.5" in report["metrics"] and "exact_match" in report["metrics"]
    )


def test_readme_python_api_runs(workspace: Path, capsys) -> None:
    (code,) = code_blocks(section("### Python API"), "python")
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out
