"""``qwenvl-train merge`` on the tiny model: LoRA adapters of a chat and of a base checkpoint, an NF4 Q-LoRA
adapter, the original on-disk layout of the result, the error lines, and interrupted merges."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoTokenizer

from export_fixtures import assert_merge_exact, sample_batch, train_adapter
from qwenvl_train.cli import build_parser
from qwenvl_train.cli import main as cli_main
from qwenvl_train.export import MergeError, merge
from qwenvl_train.format.chat_template import chat_template
from qwenvl_train.format.render import render_conversation
from qwenvl_train.format.sample import Turn
from qwenvl_train.model.visual_config import vision_settings
from qwenvl_train.tiny import make_tiny
from train_fixtures import write_dataset

REPO = Path(__file__).resolve().parents[1]
REMOTE_CODE = ("configuration_qwen.py", "modeling_qwen.py", "tokenization_qwen.py")
LORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.w1", "mlp.w2")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def base_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny chat checkpoint with the original's remote-code files beside its ``auto_map``."""
    folder = tmp_path_factory.mktemp("base") / "Qwen-VL-Chat"
    shutil.copytree(tiny_model_dir, folder)
    for name in REMOTE_CODE:
        (folder / name).write_text(f"# {name} of the original checkpoint\n")
    return folder


@pytest.fixture(scope="module")
def chat_adapter(base_dir: Path, data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_adapter(base_dir, data_file, tmp_path_factory.mktemp("chat") / "adapter")


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's safetensors files, by name."""
    state = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(path)))
    return state


def test_chat_adapter_merges_exactly_into_the_original_layout(
    base_dir: Path,
    chat_adapter: Path,
    data_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "merged"
    assert merge(chat_adapter, out, max_shard_size="60MB") == out

    assert_merge_exact(out, base_dir, chat_adapter, sample_batch(base_dir, data_file))
    shards = [f"model-{k:05d}-of-00003.safetensors" for k in (1, 2, 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no staging folder left behind
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "generation_config.json", "qwen.tiktoken", "tokenizer_config.json",
         "model.safetensors.index.json", *REMOTE_CODE, *shards]
    )  # fmt: skip
    # Everything but the weights is the base's own file: config.json keeps auto_map and, the base being fp32,
    # even torch_dtype.
    for name in ("generation_config.json", "qwen.tiktoken", *REMOTE_CODE):
        assert (out / name).read_bytes() == (base_dir / name).read_bytes(), name
    assert json.loads((out / "config.json").read_text()) == json.loads((base_dir / "config.json").read_text())
    # tokenizer_config.json is the base's plus the chat template that renders the training prompt.
    merged_tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert merged_tokenizer_config.pop("chat_template") == chat_template(vision_settings(base_dir).n_queries)
    assert merged_tokenizer_config == json.loads((base_dir / "tokenizer_config.json").read_text())
    printed = capsys.readouterr().out
    assert [line for line in printed.splitlines() if "wrote shard" in line] == [
        f"merge: wrote shard {k}/3 {shard} ({size} GiB)"
        for k, shard, size in zip((1, 2, 3), shards, ("0.07", "0.07", "0.00"), strict=True)
    ]

    index = json.loads((out / "model.safetensors.index.json").read_text())
    base = weights(base_dir)
    merged = weights(out)
    assert set(index["weight_map"]) == set(merged) == set(base)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in merged.values())
    for shard in shards:
        with safe_open(str(out / shard), "pt") as f:
            assert f.metadata() == {"format": "pt"}
            assert all(index["weight_map"][name] == shard for name in f.keys())
    adapted = {f"transformer.h.{i}.{m}.weight" for i in range(2) for m in LORA_TARGETS}
    for name, tensor in merged.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, base[name]) == (name not in adapted), name

    tokenizer = AutoTokenizer.from_pretrained(out)  # from the merged folder alone
    text = "<|im_start|>user\nPicture 1: <img>a.png</img>\nWhere?<|im_end|>"
    assert tokenizer.encode(text) == AutoTokenizer.from_pretrained(base_dir).encode(text)
    assert tokenizer.encode("<|im_start|>user\n")[:3] == [151644, 872, 198]
    # Tools that format prompts from the chat template get the ids training rendered.
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the dog?"}]},
        {"role": "assistant", "content": "<ref>the dog</ref><box>(1,2),(300,400)</box>"},
    ]
    templated = tokenizer.apply_chat_template(messages, tokenize=True)
    templated = list(templated["input_ids"] if hasattr(templated, "keys") else templated)
    turns = [
        Turn("user", "Picture 1: <img>a.png</img>\nWhere is the dog?", 0),
        Turn("assistant", "<ref>the dog</ref><box>(1,2),(300,400)</box>", 1),
    ]
    n_queries = vision_settings(base_dir).n_queries
    assert templated == render_conversation(turns, tokenizer, n_queries=n_queries).input_ids


def test_base_checkpoint_adapter_carries_its_trained_wte_and_lm_head(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    base_dir = tmp_path / "Qwen-VL"
    shutil.copytree(tiny_model_dir, base_dir)
    generation = json.loads((base_dir / "generation_config.json").read_text())
    (base_dir / "generation_config.json").write_text(json.dumps({**generation, "chat_format": "raw"}))
    # Default targets of a base checkpoint (wte and lm_head trained in full) plus a resampler parameter target.
    adapter = train_adapter(base_dir, data_file, tmp_path / "adapter", "lora", "--lora_dropout", "0",
                            "--lora_target", "c_attn", "attn.c_proj", "w1", "w2", "attn_pool.attn.in_proj_weight")  # fmt: skip
    assert json.loads((adapter / "adapter_config.json").read_text())["modules_to_save"] == ["wte", "lm_head"]

    out = tmp_path / "merged"
    merge(adapter, out)
    assert_merge_exact(out, base_dir, adapter, sample_batch(base_dir, data_file))
    trained = load_file(str(adapter / "adapter_model.safetensors"))
    merged, base = weights(out), weights(base_dir)
    for name in ("transformer.wte.weight", "lm_head.weight"):
        assert torch.equal(merged[name], trained[f"base_model.model.{name}"]), name
        assert not torch.equal(merged[name], base[name]), name
    assert not torch.equal(
        merged["transformer.visual.attn_pool.attn.in_proj_weight"],
        base["transformer.visual.attn_pool.attn.in_proj_weight"],
    )
    assert (out / "generation_config.json").read_bytes() == (base_dir / "generation_config.json").read_bytes()


def test_nf4_qlora_adapter_merges_into_the_unquantized_base(
    base_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    pytest.importorskip("bitsandbytes")
    adapter = train_adapter(base_dir, data_file, tmp_path / "adapter", "qlora", "--quant", "nf4")
    out = tmp_path / "merged"
    merge(adapter, out, dtype="bf16")
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16" and "quantization_config" not in config
    merged = weights(out)
    assert set(merged) == set(weights(base_dir)) and {t.dtype for t in merged.values()} == {torch.bfloat16}

    exact = tmp_path / "merged-fp32"
    merge(adapter, exact, dtype="fp32")
    assert_merge_exact(exact, base_dir, adapter, sample_batch(base_dir, data_file))


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``qwenvl-train ARGV`` in this process: exit status and stderr."""
    status = cli_main(list(argv))
    return status, capsys.readouterr().err


def test_cli_says_in_one_line_why_it_cannot_merge(
    chat_adapter: Path, base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moved = tmp_path / "adapter"
    shutil.copytree(chat_adapter, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "/models/Qwen-VL-Chat"})
    )
    out = tmp_path / "merged"

    status, err = run_cli("merge", "--adapter", str(moved), "--output", str(out), capsys=capsys)
    assert (status, err) == (
        1,
        f"error: base model '/models/Qwen-VL-Chat' (base_model_name_or_path in {moved}/adapter_config.json) not "
        "found: pass --base DIR, the folder of the checkpoint the adapter was trained on\n",
    )
    status, err = run_cli("merge", "--adapter", str(base_dir), "--output", str(out), capsys=capsys)
    assert (status, err) == (
        1,
        f"error: {base_dir}: no adapter_config.json, so not a LoRA adapter folder (the output of a --tune full "
        "run is already a complete model)\n",
    )
    status, err = run_cli("merge", "--adapter", str(moved), "--base", str(base_dir), "--output", str(base_dir),
                          capsys=capsys)  # fmt: skip
    assert (status, err) == (
        1,
        f"error: {base_dir} already exists: choose a new --output (a merge never writes over a folder)\n",
    )
    status, err = run_cli("merge", "--adapter", str(moved), "--base", str(base_dir), "--output", str(out),
                          "--quantize", "gptq", capsys=capsys)  # fmt: skip
    assert (
        status == 1
        and err.startswith("error: --quantize gptq needs --calib-data FILE")
        and err.count("\n") == 1
    )
    status, err = run_cli("merge", "--adapter", str(moved), "--base", str(base_dir), "--output", str(out),
                          "--quantize", "gptq", "--calib-data", str(moved / "adapter_config.json"), "--dtype", "bf16",
                          capsys=capsys)  # fmt: skip
    assert (status, err) == (
        1,
        "error: --quantize gptq writes fp16, as Qwen-VL-Chat-Int4 does: drop --dtype bf16\n",
    )
    assert not out.exists()


def test_a_failed_merge_leaves_nothing_under_the_output_name(
    chat_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    save_file = safetensors.torch.save_file
    written = []

    def save_then_fail(tensors, filename, metadata=None):  # noqa: ANN001, ANN202
        if written:
            raise OSError(28, "No space left on device")
        save_file(tensors, filename, metadata=metadata)
        written.append(filename)

    monkeypatch.setattr(safetensors.torch, "save_file", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        merge(chat_adapter, tmp_path / "merged", max_shard_size="60MB")
    assert len(written) == 1 and list(tmp_path.iterdir()) == []  # the staging folder is removed too


def test_a_full_disk_during_a_merge_is_one_line(
    chat_adapter: Path,
    base_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import safetensors.torch

    def full(tensors, filename, metadata=None):  # noqa: ANN001, ANN202
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "merged"
    status, err = run_cli("merge", "--adapter", str(chat_adapter), "--output", str(out), capsys=capsys)
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {out}: No space left on device while saving the merged model (")
    assert err.endswith(f"{chat_adapter} and {base_dir} are untouched: free some space and merge again\n")
    assert list(tmp_path.iterdir()) == []  # nothing under the output name, no partial folder


def test_a_merge_killed_while_writing_leaves_no_output_folder(chat_adapter: Path, tmp_path: Path) -> None:
    """A real SIGKILL (no cleanup runs) after the first of three shards: only the hidden staging folder remains."""
    script = textwrap.dedent(f"""
        import os, signal
        import safetensors.torch
        save_file = safetensors.torch.save_file
        def save_then_die(*args, **kwargs):
            save_file(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        safetensors.torch.save_file = save_then_die
        from qwenvl_train.cli import main
        main(["merge", "--adapter", {str(chat_adapter)!r}, "--output", {str(tmp_path / "merged")!r},
              "--max-shard-size", "60MB"])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr[-2000:]
    [staging] = list(tmp_path.iterdir())
    assert staging.name.startswith(".merged.partial-")
    assert [p.name for p in staging.glob("*.safetensors")] == ["model-00001-of-00003.safetensors"]


def readme_commands(section: str = "### Merge") -> list[list[str]]:
    """The shell commands in the bash blocks of a README section (up to the next heading), lines joined."""
    body = re.split(r"\n#{2,3} ", (REPO / "README.md").read_text().split(f"\n{section}\n", 1)[1])[0]
    blocks = re.findall(r"```bash\n(.*?)```", body, flags=re.S)
    return [shlex.split(line) for block in blocks for line in block.replace("\\\n", " ").splitlines() if line]


def test_readme_merge_commands_run(
    chat_adapter: Path, base_dir: Path, data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command of the README's Merge section, with its paths pointing at the tiny model: ``make merge``
    expands to ``python -m qwenvl_train merge ...`` (run here in-process), the CLI commands run; the GPTQ one only
    parses here (tests/test_export_quantize.py runs the same merge)."""
    venv = Path(sys.executable).parent.parent
    commands = readme_commands()
    assert [c[:2] for c in commands] == [
        ["make", "merge"],
        ["qwenvl-train", "merge"],
        ["qwenvl-train", "merge"],
    ]
    for k, command in enumerate(commands):
        paths = {"output_qwen_lora": chat_adapter, "/models/Qwen-VL-Chat": base_dir, "data/train.json": data_file,
                 "qwen-vl-chat-merged": tmp_path / f"out{k}"}  # fmt: skip
        for placeholder, path in paths.items():
            command = [re.sub(rf"(^|=){re.escape(placeholder)}$", rf"\g<1>{path}", arg) for arg in command]
        if command[0] == "make":
            make = ["make", "-s", "-n", "-C", str(REPO), f"VENV={venv}", "-o", f"{venv}/.stamp-install"]
            expanded = shlex.split(subprocess.run(make + command[1:], capture_output=True, text=True).stdout)
            assert expanded[:4] == [f"{venv}/bin/python", "-m", "qwenvl_train", "merge"]
            command = ["qwenvl-train", *expanded[3:]]
            usage = subprocess.run(make + ["merge", "ADAPTER=x"], capture_output=True, text=True)
            assert usage.returncode != 0 and "usage: make merge ADAPTER=DIR OUTPUT=DIR" in usage.stderr
        if "--quantize" in command:
            args = build_parser().parse_args(command[1:])
            assert (args.quantize, args.calib_data, args.base) == ("gptq", [str(data_file)], str(base_dir))
            continue
        assert cli_main(command[1:]) == 0, capsys.readouterr().err
        assert (tmp_path / f"out{k}" / "config.json").is_file()
    config = json.loads((tmp_path / "out1" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"


def test_a_base_that_is_not_the_adapters_is_named_with_the_first_mismatch(
    chat_adapter: Path, tmp_path: Path
) -> None:
    with pytest.raises(MergeError, match=r"--base .*: no config.json in that folder"):
        merge(chat_adapter, tmp_path / "merged", base=tmp_path)
    wider = make_tiny(tmp_path / "wider", hidden_size=256, kv_channels=64, visual={"output_dim": 256})
    with pytest.raises(MergeError) as caught:
        merge(chat_adapter, tmp_path / "merged", base=wider)
    assert str(caught.value) == (
        f"{chat_adapter} does not fit {wider}: size mismatch for "
        "base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight: copying a param with shape "
        "torch.Size([64, 128]) from checkpoint, the shape in current model is torch.Size([64, 256])."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wider"]


def test_a_base_in_the_original_bin_shards_gives_the_same_safetensors_checkpoint(
    base_dir: Path, chat_adapter: Path, tmp_path: Path
) -> None:
    """Qwen-VL-Chat ships pytorch_model-*.bin shards: they are read (weights_only), never copied."""
    from transformers import AutoModelForCausalLM

    from qwenvl_train.tiny import save_original_bin_shards

    bin_base = save_original_bin_shards(AutoModelForCausalLM.from_pretrained(base_dir), tmp_path / "bin", 3)
    for path in base_dir.iterdir():
        if not path.name.endswith(".safetensors"):
            shutil.copyfile(path, bin_base / path.name)
    from_bin = merge(chat_adapter, tmp_path / "from-bin", base=bin_base)
    from_safetensors = merge(chat_adapter, tmp_path / "from-safetensors", base=base_dir)
    assert sorted(p.name for p in from_bin.iterdir()) == sorted(p.name for p in from_safetensors.iterdir())
    assert not list(from_bin.glob("*.bin")) and not (from_bin / "pytorch_model.bin.index.json").exists()
    expected = weights(from_safetensors)
    merged = weights(from_bin)
    assert merged.keys() == expected.keys()
    assert all(torch.equal(merged[name], expected[name]) for name in expected)
