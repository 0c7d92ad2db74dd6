"""The finetune/*.sh launchers: each names its YAML recipe and runs the shared body finetune/launch.sh, which turns
the environment (GPUS_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, MODEL, DATA, OUTPUT) and the extra
options into one torchrun command. ``DRY_RUN=1`` prints that command; the tests parse it back, run its training
options through the training argument parser and check the mode and DeepSpeed/FSDP config each script stands for.
(tests/test_train_distributed.py runs launchers for real.)"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from qwenvl_train.training.arguments import parse_args, resolve_config_paths
from train_fixtures import cpu_env

ROOT = Path(__file__).resolve().parents[1]
FINETUNE = ROOT / "finetune"
DS = ROOT / "ds_configs"

#: script -> (recipe, mode, deepspeed config, fsdp config, per-device batch, accumulation, default model, default
#: output, one process unless GPUS_PER_NODE says otherwise)
LAUNCHERS = {
    "finetune_ds.sh": ("full_zero3.yaml", "full", DS / "zero3.json", None, 1, 16, "Qwen/Qwen-VL-Chat",
                       "output_qwen", False),
    "finetune_fsdp.sh": ("full_fsdp.yaml", "full", None, DS / "fsdp2.json", 1, 16, "Qwen/Qwen-VL-Chat",
                         "output_qwen_fsdp", False),
    "finetune_lora_ds.sh": ("lora_zero2.yaml", "lora", DS / "zero2.json", None, 2, 8, "Qwen/Qwen-VL-Chat",
                            "output_qwen_lora", False),
    "finetune_lora_single_gpu.sh": ("lora.yaml", "lora", None, None, 2, 8, "Qwen/Qwen-VL-Chat", "output_qwen_lora",
                                    True),
    "finetune_qlora_ds.sh": ("qlora_zero2.yaml", "qlora", DS / "zero2.json", None, 2, 8, "Qwen/Qwen-VL-Chat-Int4",
                             "output_qwen_qlora", False),
    "finetune_qlora_single_gpu.sh": ("qlora.yaml", "qlora", None, None, 2, 8, "Qwen/Qwen-VL-Chat-Int4",
                                     "output_qwen_qlora", True),
}  # fmt: skip
#: What a machine without GPU adds (the recipes ask for bf16 on GPUs).
CPU = ["--use_cpu", "--bf16", "false"]


def dry_run(script: str, cwd: Path, *extra: str, **env: str) -> list[str]:
    """The torchrun command ``script`` would run, as a list of arguments."""
    full_env = {**cpu_env(), "DRY_RUN": "1", **env}
    for name in (
        "MODEL",
        "DATA",
        "OUTPUT",
        "GPUS_PER_NODE",
        "NNODES",
        "NODE_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
    ):
        if name not in env:
            full_env.pop(name, None)
    proc = subprocess.run(["sh", str(FINETUNE / script), *extra], env=full_env, cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    return shlex.split(proc.stdout)


def training_options(command: list[str]) -> list[str]:
    """What follows ``-m qwenvl_train train`` in a torchrun command."""
    start = command.index("-m")
    assert command[start : start + 3] == ["-m", "qwenvl_train", "train"], command
    return command[start + 3 :]


def test_every_launcher_is_a_few_lines_naming_its_recipe() -> None:
    assert {p.name for p in FINETUNE.glob("*.sh")} == {*LAUNCHERS, "launch.sh"}
    # Beside the launchers' recipes, finetune/ holds only the recipes `make demo` runs.
    recipes = {recipe for recipe, *_ in LAUNCHERS.values()}
    assert {p.name for p in FINETUNE.glob("*.yaml")} == recipes | {"demo.yaml", "demo-lora.yaml"}
    for script, (recipe, *_, single) in LAUNCHERS.items():
        code = [
            line for line in (FINETUNE / script).read_text().splitlines() if line and not line.startswith("#")
        ]
        body = f'exec sh "$(dirname "$0")/launch.sh" {recipe} "$@"'
        assert code == (['export GPUS_PER_NODE="${GPUS_PER_NODE:-1}"', body] if single else [body]), script
    for script in FINETUNE.glob("*.sh"):
        assert subprocess.run(["sh", "-n", str(script)]).returncode == 0, script.name


@pytest.mark.parametrize("script", sorted(LAUNCHERS))
def test_launcher_environment_and_extra_options_reach_torchrun(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe, tune, deepspeed, fsdp_config, batch, accumulation, *_ = LAUNCHERS[script]
    env = {"GPUS_PER_NODE": "3", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "29511",
           "MODEL": "/models/My Qwen", "DATA": "/data/train.jsonl", "OUTPUT": str(tmp_path / "run's out")}  # fmt: skip
    command = dry_run(script, tmp_path, "--learning_rate", "3e-4", "--max_steps", "7", **env)
    assert command == [
        "torchrun", "--nproc_per_node", "3", "--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.7",
        "--master_port", "29511", "-m", "qwenvl_train", "train", "--config", str(FINETUNE / recipe),
        "--model_name_or_path", "/models/My Qwen", "--data_path", "/data/train.jsonl",
        "--output_dir", str(tmp_path / "run's out"), "--learning_rate", "3e-4", "--max_steps", "7",
    ]  # fmt: skip
    # The recipe passes the training parser (run from another folder: the ds_configs path is still found).
    monkeypatch.chdir(tmp_path)
    args = parse_args([*training_options(command), *CPU])
    t = args.training
    assert args.model.tune == tune and args.model.model_name_or_path == "/models/My Qwen"
    assert args.data.data_path == ["/data/train.jsonl"] and t.output_dir == str(tmp_path / "run's out")
    assert t.deepspeed == (str(deepspeed) if deepspeed else None)
    assert bool(t.fsdp) == bool(fsdp_config)
    if fsdp_config:
        assert t.fsdp_config["version"] == 2
        assert t.fsdp_config["transformer_layer_cls_to_wrap"] == ["QwenVLBlock", "VisionBlock"]
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps) == (batch, accumulation)
    assert (t.learning_rate, t.max_steps) == (3e-4, 7)  # the extra options win over the recipe
    assert (t.num_train_epochs, t.save_steps, t.save_total_limit, t.logging_steps) == (5, 1000, 10, 1)
    assert args.data.model_max_length == 2048


@pytest.mark.parametrize("script", ["finetune_lora_single_gpu.sh", "finetune_qlora_ds.sh"])
def test_launcher_defaults(script: str, tmp_path: Path) -> None:
    """Nothing set: one node, localhost:6001, the demo data, the recipe's model and output folder; a single-GPU
    launcher runs one process (the others count the GPUs, so GPUS_PER_NODE is given here)."""
    recipe, tune, *_, model, output, single = LAUNCHERS[script]
    command = dry_run(script, tmp_path, **({} if single else {"GPUS_PER_NODE": "2"}))
    assert command == [
        "torchrun", "--nproc_per_node", "1" if single else "2", "--nnodes", "1", "--node_rank", "0",
        "--master_addr", "localhost", "--master_port", "6001", "-m", "qwenvl_train", "train",
        "--config", str(FINETUNE / recipe), "--data_path", str(ROOT / "data" / "demo.json"),
    ]  # fmt: skip
    args = parse_args([*training_options(command), *CPU])
    assert (args.model.tune, args.model.model_name_or_path, args.training.output_dir) == (tune, model, output)
    assert args.training.learning_rate == 1e-4  # the mode's default, the mode coming from the recipe


def test_unknown_recipe_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(["sh", str(FINETUNE / "launch.sh"), "nope.yaml"], env={**cpu_env(), "DRY_RUN": "1"},
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"launch.sh: no recipe {FINETUNE / 'nope.yaml'}\n"


def test_config_paths_resolve_from_the_current_folder_then_the_config_file_upwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "ds_configs").mkdir(parents=True)
    (project / "ds_configs" / "z.json").write_text("{}")
    (project / "recipes" / "deep").mkdir(parents=True)
    config = project / "recipes" / "deep" / "r.yaml"
    values = {"deepspeed": "ds_configs/z.json", "fsdp_config": "missing.json", "tune": "lora"}
    monkeypatch.chdir(elsewhere.mkdir() or elsewhere)
    assert resolve_config_paths(values, config) == {
        **values,
        "deepspeed": str(project / "ds_configs" / "z.json"),
    }
    (elsewhere / "ds_configs").mkdir()
    (elsewhere / "ds_configs" / "z.json").write_text("{}")
    assert resolve_config_paths(values, config) == values  # the current folder's file first, path as written
    absolute = {"deepspeed": str(project / "ds_configs" / "z.json")}
    assert resolve_config_paths(absolute, config) == absolute


def test_a_launcher_on_a_machine_without_gpu_says_what_to_add_in_one_line(tmp_path: Path) -> None:
    """The recipe asks for bf16; without CUDA the check run once before torchrun ends the launcher with the one
    line saying what to add, and torchrun (with its own failure report) never starts."""
    env = {**cpu_env(), "DATA": str(tmp_path / "train.json"), "OUTPUT": str(tmp_path / "out")}
    for name in ("MODEL", "GPUS_PER_NODE", "NNODES", "NODE_RANK", "DRY_RUN"):
        env.pop(name, None)
    proc = subprocess.run(["sh", str(FINETUNE / "finetune_lora_single_gpu.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "qwenvl-train: --bf16 needs a CUDA GPU and this machine has none: add --use_cpu true --bf16 false "
        "(or --use_cpu true to keep bf16 mixed precision on the CPU)"
    ]
    assert proc.stdout == "" and not (tmp_path / "out").exists()
    # With what the line asks for, the same check passes (and a bad recipe key is one line too).
    ok = subprocess.run([sys.executable, "-m", "qwenvl_train", "train", "--config", str(FINETUNE / "lora.yaml"),
                         "--use_cpu", "true", "--bf16", "false", "--check_devices_only"], env=env,
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
