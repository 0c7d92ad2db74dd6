"""Two processes under ``torchrun`` (gloo, CPU): DDP, DeepSpeed ZeRO-2/ZeRO-3 and FSDP2, full and LoRA; the shell
launchers run as scripts (LoRA and Q-LoRA, NF4 and the Int4 layout, under ZeRO-2; two nodes on one machine); a
checkpoint of a ZeRO-2/ZeRO-3 run resumed. All marked slow (``make test-fast`` skips them).

Each run records, per rank, how the model really is distributed (tests/train_dist_worker.py): DDP-wrapped,
ZeRO-3 parameters partitioned, FSDP2 parameters DTensor shards (not accelerate's silent DDP fallback on CPU).
The saved folder must reload complete, and the learning rate must follow the command line's cosine schedule.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qwenvl_train.model.parameter_names import part_of
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


def run_checked(cmd: list[str], env: dict[str, str], timeout: int = 400) -> str:
    """Runs ``cmd``, fails the test with its stdout and filtered stderr unless it ends with status 0; returns
    its stdout."""
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    noise = ("Warning", "warnings.warn", "return func(", "Loading weights", "Writing model shards")
    stderr = "\n".join(line for line in proc.stderr.splitlines() if not any(n in line for n in noise))
    assert proc.returncode == 0, (
        f"{' '.join(cmd)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{stderr[-8000:]}"
    )
    return proc.stdout


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


@pytest.mark.slow
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


def run_launcher(script: str, gpus: int, tiny_model_dir: Path, data_file: Path, out: Path) -> str:
    """Runs finetune/``script`` on the tiny model; returns its stdout."""
    env = {**cpu_env(), "MODEL": str(tiny_model_dir), "DATA": str(data_file), "OUTPUT": str(out),
           "GPUS_PER_NODE": str(gpus), "MASTER_PORT": str(free_port())}  # fmt: skip
    return run_checked(["sh", str(ROOT / "finetune" / script), *CPU_OPTIONS], env)


@pytest.mark.slow
def test_launcher_lora_zero2(tiny_model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    """finetune_lora_ds.sh as a script: LoRA under ZeRO-2 on two processes."""
    run_launcher("finetune_lora_ds.sh", 2, tiny_model_dir, data_file, tmp_path / "out")
    check_trainer_state(tmp_path / "out")
    check_saved(tmp_path / "out", "lora", tiny_model_dir)
    args = torch.load(tmp_path / "out" / "training_args.bin", weights_only=False)
    assert args.deepspeed.endswith("zero2.json") and args.world_size == 2


@pytest.mark.slow
def test_launcher_qlora_single_process(tiny_model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    """finetune_qlora_single_gpu.sh as a script: Q-LoRA (NF4), one process, no DeepSpeed."""
    pytest.importorskip("bitsandbytes")
    run_launcher("finetune_qlora_single_gpu.sh", 1, tiny_model_dir, data_file, tmp_path / "out")
    check_trainer_state(tmp_path / "out")
    check_saved(tmp_path / "out", "lora", tiny_model_dir)
    args = torch.load(tmp_path / "out" / "training_args.bin", weights_only=False)
    assert not args.deepspeed and args.world_size == 1


@pytest.mark.slow
def test_launcher_two_nodes_on_one_machine(tiny_model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    """finetune_lora_ds.sh twice, as node 0 and node 1 of NNODES=2 (one process each, rendezvous at a local
    MASTER_ADDR): one world of two ranks trains LoRA under ZeRO-2 and saves once."""
    out = tmp_path / "out"
    env = {**cpu_env(), "MODEL": str(tiny_model_dir), "DATA": str(data_file), "OUTPUT": str(out),
           "GPUS_PER_NODE": "1", "NNODES": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}  # fmt: skip
    script = str(ROOT / "finetune" / "finetune_lora_ds.sh")
    nodes = [
        subprocess.Popen(
            ["sh", script, *CPU_OPTIONS],
            env={**env, "NODE_RANK": str(rank)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=400) for node in nodes]
    for rank, (node, (stdout, stderr)) in enumerate(zip(nodes, outputs, strict=True)):
        assert node.returncode == 0, (
            f"node {rank}\n--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-8000:]}"
        )
    # One world: rank 0 (node 0) prints the start summary for both nodes' processes.
    assert "world size 2" in outputs[0][0] and "world size" not in outputs[1][0]
    check_trainer_state(out)
    check_saved(out, "lora", tiny_model_dir)
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.deepspeed.endswith("zero2.json") and args.world_size == 2


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["nf4", "gptq"])
def test_launcher_qlora_zero2(
    quant: str, tiny_model_dir: Path, data_file: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """finetune_qlora_ds.sh as a script: Q-LoRA under ZeRO-2 on two processes, on an NF4 base (bitsandbytes) or
    on the Qwen-VL-Chat-Int4 layout (GPTQ), trains and saves an adapter."""
    pytest.importorskip("bitsandbytes" if quant == "nf4" else "gptqmodel")
    model = tiny_model_dir if quant == "nf4" else request.getfixturevalue("gptq_model_dir")
    out = tmp_path / "out"
    stdout = run_launcher("finetune_qlora_ds.sh", 2, model, data_file, out)
    assert "mode qlora" in stdout and "world size 2" in stdout
    check_trainer_state(out)
    check_saved(out, "lora", tiny_model_dir)
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.deepspeed.endswith("zero2.json") and args.world_size == 2
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["base_model_name_or_path"] == str(model)


def logged(out: Path) -> dict[int, tuple[float, float]]:
    """Per optimizer step, the (loss, learning rate) the run's trainer_state.json logged."""
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: (entry["loss"], entry["learning_rate"]) for entry in history if "loss" in entry}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "tune"), [("zero2", "full"), ("zero2", "lora"), ("zero3", "full"), ("zero3", "lora")]
)
def test_checkpoint_of_a_distributed_run_resumes_with_the_same_losses(
    backend: str, tune: str, tiny_model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    """Two ranks save checkpoint-2 on the way to step 4; a new run resumed from that checkpoint alone (copied to a
    fresh output folder, ``--resume_from_checkpoint auto``) trains only steps 3 and 4, on the same batches, with
    the uninterrupted run's losses: model, optimizer, scheduler, RNG (LoRA dropout) and data position came back."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"

    def torchrun(out: Path, *extra: str) -> list[list[int]]:
        """Trains into ``out``; returns, per rank, the images of each batch this run trained on."""
        probe = out.with_suffix(".probe")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(WORKER), "--model_name_or_path", str(tiny_model_dir),
               "--data_path", str(data_file), "--output_dir", str(out), "--tune", tune, "--lora_dropout", "0.5",
               *BACKENDS[backend], *CPU_OPTIONS, *extra]  # fmt: skip
        run_checked(cmd, {**cpu_env(), "PROBE_FILE": str(probe)})
        return [json.loads(Path(f"{probe}.{rank}").read_text())["images_per_step"] for rank in (0, 1)]

    batches = torchrun(whole, "--save_strategy", "steps", "--save_steps", "2")
    assert (whole / "checkpoint-2" / "trainer_state.json").is_file()
    # DeepSpeed's own shards are in the checkpoint
    assert [p.name for p in (whole / "checkpoint-2").glob("global_step*")] == ["global_step2"]
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-2", resumed / "checkpoint-2")
    batches_resumed = torchrun(resumed, "--resume_from_checkpoint", "auto")
    assert batches_resumed == [per_rank[2:] for per_rank in batches]  # steps 3 and 4 only, the same batches

    expected, got = logged(whole), logged(resumed)
    assert sorted(expected) == sorted(got) == list(range(1, STEPS + 1))
    # the history up to the checkpoint comes from it; the steps after it are trained again, identically
    assert [got[step] for step in (1, 2)] == [expected[step] for step in (1, 2)]
    assert [got[step] for step in (3, 4)] == [expected[step] for step in (3, 4)], (expected, got)
    # four different batches, four different losses
    assert len({loss for loss, _ in expected.values()}) == STEPS
    name = "model.safetensors" if tune == "full" else "adapter_model.safetensors"
    final, final_resumed = load_file(str(whole / name)), load_file(str(resumed / name))
    assert final.keys() == final_resumed.keys()
    assert all(torch.equal(final[key], final_resumed[key]) for key in final)  # the same weights at the end
