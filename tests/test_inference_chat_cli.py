"""``qwenvl-train chat``: one question, the interactive loop, --draw, adapters, one-line errors."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer

from inference_fixtures import last_question, patch_generate, scripted_generate, write_image
from qwenvl_train.cli import main
from qwenvl_train.inference.draw import PALETTE
from qwenvl_train.inference.loading import load_for_inference
from test_inference_draw import assert_box_drawn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_one_question_with_draw_writes_the_box_where_the_answer_says(
    tiny_model_dir: Path, tok, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "pic.png", (200, 100))
    calls: list[dict] = []
    answer = "<ref>the thing</ref><box>(250,200),(750,800)</box>"
    patch_generate(monkeypatch, scripted_generate(tok, lambda prompt: answer, calls))
    code = main(["chat", "--model", str(tiny_model_dir), "--image", "pic.png", "Where is the thing?",
                 "--draw", "out.png", "--max-new-tokens", "7", "--greedy"])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.strip() == answer
    prompt = tok.decode(calls[0]["input_ids"][0].tolist())
    assert last_question(prompt).startswith("Picture 1: <img><imgpad>") and prompt.endswith(
        "Where is the thing?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (
        calls[0]["generation_config"].max_new_tokens == 7 and calls[0]["generation_config"].do_sample is False
    )
    assert calls[0]["pixel_values"].shape == (1, 3, 56, 56)
    drawn = Image.open(tmp_path / "out.png")
    assert drawn.size == (200, 100)
    assert_box_drawn(drawn.convert("RGB"), (50, 20, 150, 80), PALETTE[0])


def test_interactive_loop_keeps_history_streams_and_clears(
    tiny_model_dir: Path, tok, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def answer(prompt: str) -> str:
        return f"answer to {last_question(prompt)} after {prompt.count('<|im_start|>user') - 1} turn(s)"

    patch_generate(monkeypatch, scripted_generate(tok, answer))
    monkeypatch.setattr(sys, "stdin", io.StringIO("first\n\nsecond\n:clear\nthird\n:quit\nnever asked\n"))
    assert main(["chat", "--model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    answers = re.findall(r"assistant> (.*)", out)
    assert answers == [
        "answer to first after 0 turn(s)",
        "answer to second after 1 turn(s)",
        "answer to third after 0 turn(s)",
    ]


def test_interactive_loop_with_the_real_model_streams_until_end_of_input(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\nno <img>such.png</img> here\n"))
    assert main(["chat", "--model", str(tiny_model_dir), "--greedy", "--max-new-tokens", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("assistant> ") == 2 and captured.out.count("user> ") == 3
    # A bad image in a question is reported and the loop goes on.
    assert "error: such.png: no such file" in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "{tmp}/nowhere", "Hi"], "--model {tmp}/nowhere: not a model folder (no config.json)"),
        (["--model", "{model}", "--adapter", "{tmp}", "Hi"], "--adapter {tmp}: not an adapter folder"),
        (["--model", "{model}", "--image", "{tmp}/missing.png", "Hi"], "{tmp}/missing.png: no such file"),
        (["Hi"], "pass --model DIR"),
    ],
)
def test_known_errors_are_one_line_and_exit_1(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    fill = {"tmp": str(tmp_path), "model": str(tiny_model_dir)}
    assert main(["chat", *[a.format(**fill) for a in args]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message.format(**fill) in err


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter saved as training saves it (adapter_config.json naming the base, no config.json), with
    non-zero B matrices so that it changes the logits."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "w1"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    return out


def test_adapter_is_applied_given_with_the_model_or_alone(tiny_model_dir: Path, adapter_dir: Path) -> None:
    from peft import PeftModel

    ids = torch.tensor([[151644, 8948, 198, 9707, 151645]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    expected = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir
    ).eval()
    with torch.no_grad():
        want = expected(ids).logits
        assert not torch.allclose(want, base(ids).logits, atol=1e-3)
        for model_arg, adapter_arg in (
            (str(tiny_model_dir), str(adapter_dir)),
            (str(adapter_dir), None),
            (None, str(adapter_dir)),
        ):
            model, tokenizer = load_for_inference(model_arg, adapter_arg)
            assert not model.training and tokenizer.encode("Hello") == [9707]
            torch.testing.assert_close(model(ids).logits, want, rtol=0, atol=1e-5)


def test_chat_cli_with_an_adapter(
    tiny_model_dir: Path, adapter_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["chat", "--model", str(tiny_model_dir), "--adapter", str(adapter_dir), "--greedy",
                 "--max-new-tokens", "4", "Hello"]) == 0  # fmt: skip
    with_adapter = capsys.readouterr().out
    assert main(["chat", "--model", str(tiny_model_dir), "--greedy", "--max-new-tokens", "4", "Hello"]) == 0
    assert capsys.readouterr().out != with_adapter


def test_command_modules_import_only_the_standard_library() -> None:
    code = (
        "import sys; import qwenvl_train.cli, qwenvl_train.commands.chat, qwenvl_train.commands.eval,"
        " qwenvl_train.commands.serve; qwenvl_train.cli.build_parser();"
        "print(sorted(m for m in ('torch', 'transformers', 'PIL', 'numpy', 'peft') if m in sys.modules))"
    )
    # Run the modules' own code without the package __init__ (which registers the model classes).
    stub = (
        "import sys, types, pathlib; pkg = types.ModuleType('qwenvl_train');"
        f"pkg.__path__ = [str(pathlib.Path({str(ROOT / 'src' / 'qwenvl_train')!r}))]; sys.modules['qwenvl_train'] = pkg;"
    )
    out = subprocess.run(
        [sys.executable, "-c", stub + code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
