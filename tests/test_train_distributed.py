"""Two processes under ``torchrun`` (gloo, CPU): DDP, DeepSpeed ZeRO-2/ZeRO-3 and FSDP2, full and LoRA, plus the
shell launchers run as scripts.

Each run records, per rank, how the model really is distributed (tests/train_dist_worker.py): DDP-wrapped,
ZeRO-3 parameters partitioned, FSDP2 parameters DTensor shards (not accelerate's silent DDP fallback on CPU).
The saved folder must reload complete, and the learning rate must follow the command line's cosine schedule.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qwenvl_train.training.prepare import part_of
from train_fixtures import cpu_env, free_port, write_dataset

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("train_dist_worker.py")
STEPS = 4
LR = 1e-3
CPU_OPTIONS = ["--use_cpu", "--ddp_backend", "gloo", "--bf16", "false", "--max_steps", str(STEPS),
               "--learning_rate", str(LR), "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1",
               "--activation_checkpointing", "false", "--logging_steps", "1", "--save_strategy", "no",
               "--report_to", "none", "--disable_tqdm", "true", "--dataloader_num_workers", "0"]  # fmt: skip
BACKENDS = {
    "ddp": [],
    "zero2": ["--deepspeed", str(ROOT / "ds_configs" / "zero2.json")],
    "zero3": ["--deepspeed", str(ROOT / "ds_configs" / "zero3.json")],
    "fsdp2": ["--fsdp", "--fsdp_config", str(ROOT / "ds_configs" / "fsdp2.json")],
}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five image samples and three text-only ones: eight samples, which the STEPS=4 steps on two ranks, one sample
    each, consume exactly once. Whatever the shuffle, each step pairs two samples and an odd number of text-only
    samples cannot all be paired with one another: at least one step gives one rank a text-only batch while the other
    has an image (under ZeRO-3 that hung until the model ran its vision tower on every step). ``check_facts``
    asserts it happened."""
    assert STEPS * 2 == 5 + 3
    return write_dataset(tmp_path_factory.mktemp("data"), n_samples=5, n_text=3)


def run_checked(cmd: list[str], env: dict[str, str], timeout: int = 400) -> None:
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    noise = ("Warning", "warnings.warn", "return func(", "Loading weights", "Writing model shards")
    stderr = "\n".join(line for line in proc.stderr.splitlines() if not any(n in line for n in noise))
    assert proc.returncode == 0, (
        f"{' '.join(cmd)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{stderr[-8000:]}"
    )


def expected_learning_rates() -> list[float]:
    """What --lr_scheduler_type cosine with 1% warmup (one step) logs at steps 1..STEPS."""
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=1, num_training_steps=STEPS)
    rates = []
    for _ in range(STEPS):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def check_trainer_state(out: Path) -> None:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "loss" in entry]
    assert [entry["step"] for entry in steps] == list(range(1, STEPS + 1))
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in steps)
    # The command line's cosine schedule runs (no DeepSpeed scheduler block replaced it).
    assert [entry["learning_rate"] for entry in steps] == pytest.approx(expected_learning_rates(), rel=1e-6)


def check_saved(out: Path, tune: str, tiny_model_dir: Path) -> None:
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    for name in ("generation_config.json", "tokenizer_config.json", "qwen.tiktoken"):
        assert (out / name).is_file(), name
    if tune == "full":
        saved = load_file(str(out / "model.safetensors"))
        assert saved.keys() == base.keys()  # complete: every weight, gathered from the shards
        for name, tensor in base.items():
            assert saved[name].shape == tensor.shape, name
            trains = part_of(name) != "vit" and not name.endswith("pos_embed")
            assert torch.equal(saved[name], tensor) != trains, (
                f"{name}: {'unchanged' if trains else 'changed'}"
            )
    else:
        adapter = load_file(str(out / "adapter_model.safetensors"))
        assert len(adapter) == 2 * 2 * 4  # A and B for c_attn, attn.c_proj, w1, w2 in both blocks
        assert all(t.abs().sum() > 0 for name, t in adapter.items() if "lora_B" in name)


def check_facts(probe: Path, backend: str) -> None:
    facts = [json.loads(Path(f"{probe}.{rank}").read_text()) for rank in (0, 1)]
    # Per step, the images in each rank's batch: some step must have had a text-only batch next to an image one.
    images = [fact["images_per_step"] for fact in facts]
    assert [len(per_rank) for per_rank in images] == [STEPS, STEPS], images
    assert any(min(pair) == 0 < max(pair) for pair in zip(*images, strict=True)), images
    for fact in facts:
        assert fact["world_size"] == 2 and fact["backend"] == "gloo"
        assert fact["lr_scheduler"] == "LambdaLR"  # the Trainer's scheduler, not DeepSpeed's
        if backend == "ddp":
            assert fact["ddp"] and not fact["deepspeed"] and not fact["fsdp"]
        elif backend.startswith("zero"):
            assert fact["deepspeed"] and fact["zero_stage"] == int(backend[-1])
            if backend == "zero3":  # every parameter really partitioned: each rank holds half
                assert fact["zero3_params"] > 0 and fact["zero3_partitioned"] == fact["zero3_params"]
                assert fact["zero3_local_numel"] * 2 <= fact["zero3_full_numel"] + 2 * fact["zero3_params"]
        else:
            assert fact["fsdp"] and not fact["ddp"]
            assert fact["dtensor_params"] == fact["params"] and fact["dtensor_sharded"] == fact["params"]


@pytest.mark.parametrize(
    ("backend", "tune"),
    [
        ("ddp", "full"),
        ("ddp", "lora"),
        ("zero2", "full"),
        ("zero3", "full"),
        ("zero3", "lora"),
        ("fsdp2", "full"),
        ("fsdp2", "lora"),
    ],  # fmt: skip
)
def test_torchrun_two_processes(
    backend: str, tune: str, tiny_model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    out, probe = tmp_path / "out", tmp_path / "probe"
    env = {**cpu_env(), "PROBE_FILE": str(probe)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(WORKER), "--model_name_or_path", str(tiny_model_dir), "--data_path", str(data_file),
           "--output_dir", str(out), "--tune", tune, *BACKENDS[backend], *CPU_OPTIONS]  # fmt: skip
    run_checked(cmd, env)
    check_facts(probe, backend)
    check_trainer_state(out)
    check_saved(out, tune, tiny_model_dir)


def run_launcher(script: str, gpus: int, tiny_model_dir: Path, data_file: Path, out: Path) -> None:
    env = {**cpu_env(), "MODEL": str(tiny_model_dir), "DATA": str(data_file), "OUTPUT": str(out),
           "GPUS_PER_NODE": str(gpus), "MASTER_PORT": str(free_port())}  # fmt: skip
    run_checked(["sh", str(ROOT / "finetune" / script), *CPU_OPTIONS], env)


def test_launcher_lora_zero2(tiny_model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    """finetune_lora_ds.sh as a script: LoRA under ZeRO-2 on two processes."""
    run_launcher("finetune_lora_ds.sh", 2, tiny_model_dir, data_file, tmp_path / "out")
    check_trainer_state(tmp_path / "out")
    check_saved(tmp_path / "out", "lora", tiny_model_dir)
    args = torch.load(tmp_path / "out" / "training_args.bin", weights_only=False)
    assert args.deepspeed.endswith("zero2.json") and args.world_size == 2


def test_launcher_qlora_single_process(tiny_model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    """finetune_qlora_single_gpu.sh as a script: Q-LoRA (NF4), one process, no DeepSpeed."""
    pytest.importorskip("bitsandbytes")
    run_launcher("finetune_qlora_single_gpu.sh", 1, tiny_model_dir, data_file, tmp_path / "out")
    check_trainer_state(tmp_path / "out")
    check_saved(tmp_path / "out", "lora", tiny_model_dir)
    args = torch.load(tmp_path / "out" / "training_args.bin", weights_only=False)
    assert not args.deepspeed and args.world_size == 1
