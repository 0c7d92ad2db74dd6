"""The command line starts without heavy imports and without noise; registration with the Auto classes is lazy.

Behaviour only (what is imported, what is printed); the times are printed by ``benchmarks/cli_startup.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
COMMANDS = ["check-data", "convert", "chat", "eval", "merge", "make-tiny", "vocab"]


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": SRC, "QWENVL_TRAIN_CACHE": str(tmp_path / "cache"), **env}
    if "QWENVL_TRAIN_VERBOSE" not in env:
        environment.pop("QWENVL_TRAIN_VERBOSE", None)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300
    )


def test_import_loads_neither_torch_nor_transformers(tmp_path: Path) -> None:
    proc = run_python(
        "import sys, qwenvl_train, qwenvl_train.cli, qwenvl_train.data, qwenvl_train.training, qwenvl_train.export\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'deepspeed', 'numpy') if m in sys.modules))",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert proc.stderr == ""


def test_help_of_every_command_is_quiet_and_light(tmp_path: Path) -> None:
    """``--help`` of the CLI and each sub-command (train aside): exit 0, help on stdout, nothing on stderr, and
    torch never imported."""
    code = (
        "import sys, contextlib, io\n"
        "from qwenvl_train.cli import main\n"
        f"for argv in [['--help']] + [[c, '--help'] for c in {COMMANDS!r}]:\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as exc:\n"
        "            assert exc.code == 0, (argv, exc.code)\n"
        "    assert out.getvalue().startswith('usage: qwenvl-train'), (argv, out.getvalue()[:200])\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "False False"
    assert proc.stderr == ""


def test_train_help_is_quiet_and_cached(tmp_path: Path) -> None:
    """The first ``train --help`` builds the text (importing transformers) without a word on stderr; the second
    prints the same text from the cache without importing transformers."""
    cold = run_python("from qwenvl_train.cli import main; main(['train', '--help'])", tmp_path)
    assert cold.returncode == 0 and cold.stderr == "", cold.stderr
    assert (
        cold.stdout.startswith("usage: qwenvl-train train") and "--per_device_train_batch_size" in cold.stdout
    )
    assert "--checkpoint_kind" in cold.stdout and "--config FILE.yaml" in cold.stdout
    warm = run_python(
        "import sys; from qwenvl_train.cli import main; main(['train', '--help'])\n"
        "sys.stderr.write(str('transformers' in sys.modules))",
        tmp_path,
    )
    assert warm.stdout == cold.stdout
    assert warm.stderr == "False"


def test_console_script_help_has_empty_stderr(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qwenvl_train", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert "--verbose" in proc.stdout and "check-data" in proc.stdout


@pytest.mark.parametrize("verbose", [False, True])
def test_third_party_noise_only_when_verbose(tmp_path: Path, verbose: bool) -> None:
    """What libraries log below ERROR at import (torchao's "Failed to load", a child logger of bitsandbytes) is
    dropped unless verbose; an error still shows."""
    code = (
        "import logging\n"
        "from qwenvl_train.quiet import silence_third_party\n"
        "silence_third_party()\n"
        "logging.getLogger('torchao').warning('Failed to load _C.so')\n"
        "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('Failed to load CPU gemm')\n"
        "logging.getLogger('torchao').error('a real error')\n"
    )
    proc = run_python(code, tmp_path, **({"QWENVL_TRAIN_VERBOSE": "1"} if verbose else {}))
    assert proc.returncode == 0
    lines = proc.stderr.splitlines()
    if verbose:
        assert lines == ["Failed to load _C.so", "Failed to load CPU gemm", "a real error"]
    else:
        assert lines == ["a real error"]


@pytest.mark.parametrize(
    "first_import",
    [
        "import qwenvl_train",
        "import qwenvl_train.model",
        "import qwenvl_train.tokenizer",
        "import qwenvl_train.model.vision",
        "import transformers.models.auto.modeling_auto; import qwenvl_train",
        "import qwenvl_train; import transformers.modeling_layers",
    ],
)
def test_auto_classes_find_the_model_after_a_plain_import(
    tmp_path: Path, tiny_model_dir: Path, first_import: str
) -> None:
    """``import qwenvl_train`` (nothing else) then the Auto classes load an original checkpoint folder, whichever
    module imported transformers first: also when transformers loads its Auto module from the middle of another
    module (``transformers.modeling_layers`` imports ``AutoModel`` before defining what our model needs), and when
    transformers' Auto module was loaded before ``qwenvl_train``."""
    code = (
        f"{first_import}\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(tiny_model_dir)!r})\n"
        f"tokenizer = AutoTokenizer.from_pretrained({str(tiny_model_dir)!r})\n"
        "print(type(model).__name__, type(tokenizer).__name__, model.config.model_type)\n"
    )
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-3:] == ["QwenVLForCausalLM", "QWenTokenizer", "qwen"]


def test_check_data_options_parse_as_train_parses_them() -> None:
    """check-data builds its data options without transformers; they parse exactly as HfArgumentParser does."""
    from transformers import HfArgumentParser

    from qwenvl_train.data.options import DataOptions, data_options_parser

    ours, theirs = data_options_parser(), HfArgumentParser(DataOptions)
    for argv in (
        [],
        ["--model_max_length", "64", "--truncation", "cut_turns", "--on_error", "skip"],
        ["--allow_bare_boxes", "--verify-images", "none", "--preprocessing_num_workers", "3"],
        ["--allow_bare_boxes", "false", "--image_timeout", "2.5", "--data_cache", "off"],
    ):
        assert vars(ours.parse_args(argv)) == vars(theirs.parse_args(argv)), argv
    with pytest.raises(SystemExit):
        ours.parse_args(["--truncation", "cut"])


def test_gptqmodel_banner_silenced(tmp_path: Path) -> None:
    """gptqmodel prints its banner and "GIL is enabled" through logbar, not logging: silenced too (at most the
    blank line logbar prints when it starts)."""
    pytest.importorskip("gptqmodel")
    code = "from qwenvl_train.quiet import silence_third_party\nsilence_third_party()\nimport gptqmodel\n"
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "" and proc.stderr == ""


def test_verbose_flag_reaches_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``qwenvl-train --verbose ...`` is the environment variable, so torchrun's ranks and workers follow it."""
    from qwenvl_train.cli import main

    # setenv first: monkeypatch restores only what it recorded, and delenv of an absent variable records nothing,
    # so the variable main() sets would leak into every later test's child processes (noise in their stderr).
    monkeypatch.setenv("QWENVL_TRAIN_VERBOSE", "")
    monkeypatch.delenv("QWENVL_TRAIN_VERBOSE")
    with pytest.raises(SystemExit) as info:
        main(["vocab", "--verbose", "--help"])
    assert info.value.code == 0 and os.environ["QWENVL_TRAIN_VERBOSE"] == "1"
