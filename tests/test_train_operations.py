"""Operations: exact resume, a save killed half-way, a non-finite loss stops training, wandb offline logging,
length-grouped sampling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import qwenvl_train.training.run as run
from qwenvl_train.training import parse_args, train
from qwenvl_train.training.prepare import load_model, load_tokenizer, prepare_model
from qwenvl_train.training.run_checkpoints import resolve_resume
from qwenvl_train.training.trainer import NonFiniteLossError
from train_fixtures import cpu_args, write_dataset


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


class StopAfter(TrainerCallback):
    """Simulates a job killed right after the checkpoint of step ``step`` was written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def losses_by_step(log_history: list[dict]) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in log_history if "loss" in entry}


def test_resume_reproduces_an_uninterrupted_run(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 9 samples, batch 2: an epoch is 5 steps, so steps 5..8 cross an epoch boundary after the resume point 4.
    # LoRA dropout 0.05 makes the result depend on the restored RNG, the shuffled order on the data order.
    options = ("--tune", "lora", "--max_steps", "8", "--learning_rate", "3e-3", "--save_strategy", "steps",
               "--save_steps", "4", "--lora_dropout", "0.05")  # fmt: skip
    whole = train(cpu_args(tiny_model_dir, data_file, tmp_path / "whole", *options))

    build_trainer = run.build_trainer

    def build_stopping_trainer(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        trainer = build_trainer(*args, **kwargs)
        trainer.add_callback(StopAfter(4))
        return trainer

    monkeypatch.setattr(run, "build_trainer", build_stopping_trainer)
    stopped = train(cpu_args(tiny_model_dir, data_file, tmp_path / "parts", *options))
    assert stopped.state.global_step == 4
    monkeypatch.setattr(run, "build_trainer", build_trainer)
    resumed = train(
        cpu_args(tiny_model_dir, data_file, tmp_path / "parts", *options, "--resume_from_checkpoint", "auto")
    )
    assert resumed.state.global_step == 8

    expected, got = losses_by_step(whole.state.log_history), losses_by_step(resumed.state.log_history)
    assert set(got) == set(range(1, 9))  # steps 1..4 come back from the checkpoint's trainer_state.json
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    final_whole = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    final_resumed = load_file(str(tmp_path / "parts" / "adapter_model.safetensors"))
    assert final_whole.keys() == final_resumed.keys()
    for name in final_whole:
        torch.testing.assert_close(final_resumed[name], final_whole[name], rtol=1e-5, atol=1e-7)


def test_a_save_killed_half_way_leaves_the_previous_checkpoint_to_resume_from(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    """A real kill: the training process SIGKILLs itself while writing checkpoint-4 (after its weights, optimizer
    and RNG state, before trainer_state.json); ``--resume_from_checkpoint auto`` then takes checkpoint-2."""
    out, steps_file = tmp_path / "out", tmp_path / "steps"
    worker = Path(__file__).with_name("train_kill_worker.py")
    options = cpu_args(tiny_model_dir, data_file, out, "--tune", "lora", "--max_steps", "4",
                       "--save_strategy", "steps", "--save_steps", "2")  # fmt: skip
    env = {
        **os.environ,
        "STEPS_FILE": str(steps_file),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }

    def train_in_subprocess(*extra: str, kill_at: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(worker), *options, *extra],
                              env={**env, "KILL_AT_CHECKPOINT": str(kill_at)},
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    killed = train_in_subprocess(kill_at=4)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert steps_file.read_text().split() == ["1", "2", "3", "4"]
    half = out / "checkpoint-4"
    for name in ("adapter_model.safetensors", "optimizer.pt", "rng_state.pth"):
        assert (half / name).is_file(), name  # the save had started...
    assert not (half / "trainer_state.json").exists()  # ...and was killed before its last file
    assert not (out / "adapter_model.safetensors").exists()  # no final save either
    previous = out / "checkpoint-2"
    assert resolve_resume("auto", str(out)) == str(previous)

    steps_file.unlink()
    resumed = train_in_subprocess("--resume_from_checkpoint", "auto", kill_at=0)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps_file.read_text().split() == ["3", "4"]  # started from checkpoint-2's step, not afresh
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    before = json.loads((previous / "trainer_state.json").read_text())["log_history"]
    assert [
        e for e in state["log_history"] if e.get("step", 0) <= 2
    ] == before  # steps 1-2: checkpoint-2's own
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]
    assert (half / "trainer_state.json").is_file()  # checkpoint-4 written again, complete this time
    assert (out / "adapter_model.safetensors").is_file()


def test_non_finite_loss_stops_training_naming_the_step(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    args = parse_args(
        cpu_args(tiny_model_dir, data_file, tmp_path / "out", "--tune", "lora", "--max_steps", "6")
    )
    tokenizer = load_tokenizer(args)
    model = prepare_model(load_model(args), args)
    train_set, _ = run.build_datasets(args, tokenizer)
    trainer = run.build_trainer(args, model, tokenizer, train_set)

    def poison(module, inputs, output):  # noqa: ANN001, ANN202
        return output * float("nan") if trainer.state.global_step == 2 else output

    model.get_base_model().transformer.ln_f.register_forward_hook(poison)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 3 of 6"):
        trainer.train()


def test_wandb_offline_run_records_train_loss(
    tiny_model_dir: Path, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "qwenvl-train-test")
    args = cpu_args(tiny_model_dir, data_file, tmp_path / "out", "--tune", "lora", "--max_steps", "3")
    args[args.index("--report_to") + 1] = "wandb"
    wandb.teardown()  # wandb keeps its settings (WANDB_DIR) per process: start afresh from an earlier test's run
    try:
        train(args)
    finally:
        wandb.teardown()  # waits for wandb's service to exit, so the run's record log is complete on disk

    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    # wandb >= 0.2x writes history only into the run's protobuf record log (no Python reader ships with it):
    # each logged step stores its metrics there by name.
    records = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert records.count(b"train/loss") >= 3


def write_varied_lengths(folder: Path, n: int = 120) -> Path:
    """``n`` text samples whose answers hold 1..12 words: ten samples of each of twelve lengths."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = [
        {"id": f"t{i}", "conversations": [{"from": "user", "value": "Count."},
                                          {"from": "assistant", "value": " ".join(["word"] * (1 + i % 12))}]}
        for i in range(n)
    ]  # fmt: skip
    path = folder / "varied.json"
    path.write_text(json.dumps(samples))
    return path


def test_length_grouped_order_depends_only_on_seed_and_epoch(tiny_model_dir: Path, tmp_path: Path) -> None:
    """batch 1 x 1 process, 120 samples: LengthGroupedSampler draws four megabatches of 30 (min(50, 120 / 4) x the
    batch), each sorted longest first; the longest sample of all is then swapped to the very front."""
    data = write_varied_lengths(tmp_path / "data")

    def sampler_for(seed: int):  # noqa: ANN202
        args = parse_args(
            cpu_args(tiny_model_dir, data, tmp_path, "--tune", "lora", "--train_sampling_strategy", "group_by_length",
                     "--per_device_train_batch_size", "1", "--data_seed", str(seed))
        )  # fmt: skip
        return run.build_trainer(args, model, tokenizer, train_set)._get_train_sampler()

    args = parse_args(cpu_args(tiny_model_dir, data, tmp_path, "--tune", "lora"))
    tokenizer = load_tokenizer(args)
    model = prepare_model(load_model(args), args)
    train_set, _ = run.build_datasets(args, tokenizer)
    lengths = train_set.lengths.tolist()
    assert len(set(lengths)) == 12 and len(lengths) == 120

    sampler = sampler_for(seed=0)
    first = list(sampler)
    assert sorted(first) == list(range(120))  # every sample once
    assert lengths[first[0]] == max(lengths)
    for start in range(
        0, 120, 30
    ):  # grouped: within a megabatch, longest first (after the swapped first one)
        group = [lengths[i] for i in first[start + 1 : start + 30]]
        assert len(set(group)) > 1
        assert group == sorted(group, reverse=True), start
    torch.manual_seed(1234)  # unrelated RNG use must not change the order
    assert list(sampler) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == sorted(first)  # each epoch draws another order ...
    sampler.set_epoch(0)
    assert list(sampler) == first  # ... and the same one again when replayed (resume)
    other_seed = list(sampler_for(seed=1))
    assert other_seed != first and sorted(other_seed) == sorted(first)
