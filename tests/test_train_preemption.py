"""Preemption: SIGTERM / SIGUSR1 during training ask for a checkpoint after the current step and a clean stop."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from qwenvl_train.training.preemption import PREEMPTED_STATUS, PreemptionCallback, preempted_line


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
