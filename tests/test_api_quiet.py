"""The Python API is as quiet as the command line: a program that imports qwenvl_train and loads a tokenizer, a
model and a LoRA adapter prints nothing on stdout or stderr (no GPT-QModel banner, no torchao / pytree /
bitsandbytes chatter, no loading bar into a pipe), unless ``QWENVL_TRAIN_VERBOSE=1``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

PROGRAM = """
import sys
import qwenvl_train
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
model = PeftModel.from_pretrained(model, sys.argv[2])
assert tokenizer.encode_text("hello") and model is not None
"""


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter of the tiny model, written by a process of its own (its noise is not under test)."""
    folder = tmp_path_factory.mktemp("adapter") / "lora"
    code = (
        "import sys, qwenvl_train\n"
        "from transformers import AutoModelForCausalLM\n"
        "from peft import LoraConfig, get_peft_model\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "get_peft_model(model, LoraConfig(r=2, target_modules=['c_attn'])).save_pretrained(sys.argv[2])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model_dir), str(folder)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


@pytest.mark.parametrize("verbose", [False, True])
def test_importing_and_loading_print_nothing_unless_verbose(tiny_model_dir, adapter, tmp_path, verbose):
    env = {**os.environ, "PYTHONPATH": SRC, "QWENVL_TRAIN_CACHE": str(tmp_path / "cache")}
    env.pop("QWENVL_TRAIN_VERBOSE", None)
    if verbose:
        env["QWENVL_TRAIN_VERBOSE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tiny_model_dir), str(adapter)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if verbose:  # what the libraries say is all there (at least the loading bar and GPT-QModel's banner)
        assert "Loading weights" in done.stderr and "GPT-QModel" in done.stdout + done.stderr
    else:
        assert (done.stdout, done.stderr) == ("", "")
