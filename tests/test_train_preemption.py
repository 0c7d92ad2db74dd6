"""Preemption: SIGTERM / SIGUSR1 during training ask for a checkpoint after the current step and a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from qwenvl_train.training import train
from qwenvl_train.training.preemption import PREEMPTED_STATUS, PreemptionCallback, preempted_line
from train_fixtures import cpu_args, cpu_env, free_port, write_dataset


def losses_by_step(log_history: list[dict]) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in log_history if "loss" in entry}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_turns_the_end_of_the_step_into_a_checkpoint_and_a_stop(signum, capsys):
    callback = PreemptionCallback()
    args, state = SimpleNamespace(device="cpu"), SimpleNamespace(global_step=3)
    before = signal.getsignal(signum)
    callback.on_train_begin(args, state, TrainerControl())
    try:
        control = callback.on_step_end(args, state, TrainerControl())
        assert not control.should_save and not control.should_training_stop  # nothing asked yet
        os.kill(os.getpid(), signum)  # handled between two bytecodes, in this (main) thread
        assert callback.received == signal.Signals(signum).name
        state.global_step = 4
        control = callback.on_step_end(args, state, TrainerControl())
        assert control.should_save and control.should_training_stop and callback.stopped_at == 4
    finally:
        callback.on_train_end(args, state, TrainerControl())
    assert signal.getsignal(signum) == before  # the handler that was there is back
    name = signal.Signals(signum).name
    assert f"{name} received: finishing this step, then saving a checkpoint" in capsys.readouterr().err
    line = preempted_line(callback, "out/checkpoint-4")
    assert line == (
        f"stopped by {name} after step 4: checkpoint out/checkpoint-4 is complete; resume with "
        "--resume_from_checkpoint auto (same --output_dir)"
    )
    assert PREEMPTED_STATUS == 75


# ---------------------------------------------------------------- a real run, signalled while it trains
WORKER = Path(__file__).with_name("train_signal_worker.py")
OPTIONS = ("--tune", "lora", "--max_steps", "6", "--learning_rate", "3e-3", "--lora_dropout", "0.05",
           "--save_strategy", "no")  # fmt: skip


def losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def train_in_subprocess(args: list[str], steps_file: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "STEPS_FILE": str(steps_file), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, str(WORKER), *args], env=environment, capture_output=True, text=True, timeout=300
    )


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_matches_an_uninterrupted_one(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = write_dataset(tmp_path / "data")
    whole = train(cpu_args(tiny_model_dir, data, tmp_path / "whole", *OPTIONS))
    out, steps = tmp_path / "out", tmp_path / "steps"
    args = cpu_args(tiny_model_dir, data, out, *OPTIONS)

    stopped = train_in_subprocess(args, steps, SIGNAL_AT_STEP="3")
    assert stopped.returncode == PREEMPTED_STATUS, stopped.stderr[-3000:]
    assert steps.read_text().split() == ["1", "2", "3"]  # step 3 finished, nothing after it
    assert "SIGTERM received: finishing this step, then saving a checkpoint and stopping" in stopped.stderr
    assert (
        f"qwenvl-train: stopped by SIGTERM after step 3: checkpoint {out / 'checkpoint-3'} is complete; resume "
        "with --resume_from_checkpoint auto (same --output_dir)"
    ) in stopped.stderr.splitlines()
    assert "Traceback" not in stopped.stderr
    assert (out / "checkpoint-3" / "trainer_state.json").is_file()  # complete
    assert not (out / "adapter_model.safetensors").exists()  # not finished: no final save

    steps.unlink()
    resumed = train_in_subprocess([*args, "--resume_from_checkpoint", "auto"], steps)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps.read_text().split() == ["4", "5", "6"]
    expected, got = losses_by_step(whole.state.log_history), losses(out)
    assert sorted(got) == list(range(1, 7))
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


def test_a_second_sigterm_stops_at_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data")
    out, steps = tmp_path / "out", tmp_path / "steps"
    killed = train_in_subprocess(cpu_args(tiny_model_dir, data, out, *OPTIONS), steps, SIGNAL_AT_STEP="2",
                                 SIGNAL_COUNT="2")  # fmt: skip
    assert killed.returncode == -signal.SIGTERM, killed.stderr[-3000:]
    assert steps.read_text().split() == ["1", "2"]
    assert not list(out.glob("checkpoint-*"))


@pytest.mark.slow
def test_under_torchrun_one_signalled_rank_stops_every_rank_after_the_same_step(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Two ranks (gloo); only rank 1 gets SIGTERM, during step 2: both finish step 2, write one checkpoint and stop;
    the run resumed from it ends with the losses of an uninterrupted run."""
    data = write_dataset(tmp_path / "data", n_samples=5, n_text=3)
    options = ["--model_name_or_path", str(tiny_model_dir), "--data_path", str(data), "--tune", "lora",
               "--lora_dropout", "0.5", "--use_cpu", "--ddp_backend", "gloo", "--bf16", "false", "--max_steps", "4",
               "--learning_rate", "1e-3", "--per_device_train_batch_size", "1", "--logging_steps", "1",
               "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
               "--dataloader_num_workers", "0"]  # fmt: skip

    def torchrun(out: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(WORKER), *options, "--output_dir", str(out), *extra]  # fmt: skip
        return subprocess.run(cmd, env={**cpu_env(), **env}, capture_output=True, text=True, timeout=400)

    whole = torchrun(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = tmp_path / "out"
    stopped = torchrun(out, SIGNAL_AT_STEP="2", SIGNAL_RANK="1", STEPS_FILE=str(tmp_path / "steps"))
    assert stopped.returncode != 0  # torchrun reports the ranks' status 75 as a failure of its own
    assert (
        f"qwenvl-train: stopped by a signal on another rank after step 2: checkpoint {out / 'checkpoint-2'} is "
        "complete; resume with --resume_from_checkpoint auto (same --output_dir)"
    ) in stopped.stderr.splitlines()
    assert (tmp_path / "steps").read_text().split() == ["1", "2"]  # rank 0 stopped after step 2 too
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    resumed = torchrun(out, "--resume_from_checkpoint", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(out) == pytest.approx(losses(tmp_path / "whole"), rel=1e-5, abs=1e-6)
