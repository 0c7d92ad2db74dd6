"""Run ``qwenvl_train.train`` in this process and SIGKILL it in the middle of writing a checkpoint.

Used by tests/test_train_operations.py as ``python tests/train_kill_worker.py [train options]``:

- ``KILL_AT_CHECKPOINT=N``: the process kills itself (SIGKILL, no cleanup, no ``finally``) while saving
  ``checkpoint-N``, right after the RNG state is written; the Trainer writes ``trainer_state.json`` last, so that
  folder is left half-written, as by a job killed by the scheduler. 0 or unset: no kill.
- ``STEPS_FILE``: each optimizer step this process runs (1, 2, ...) is appended to it, one a line.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from transformers import Trainer, TrainerCallback

import qwenvl_train.training.run as run

KILL_AT = int(os.environ.get("KILL_AT_CHECKPOINT") or 0)
_save_rng_state = Trainer._save_rng_state


def save_rng_state_then_die(self: Trainer, output_dir: str) -> None:
    _save_rng_state(self, output_dir)
    if KILL_AT and Path(output_dir).name == f"checkpoint-{KILL_AT}":
        os.kill(os.getpid(), signal.SIGKILL)


class RecordSteps(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        with open(os.environ["STEPS_FILE"], "a") as fh:
            fh.write(f"{state.global_step + 1}\n")
        return control


def main() -> int:
    Trainer._save_rng_state = save_rng_state_then_die
    build_trainer = run.build_trainer

    def build_recording_trainer(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        trainer = build_trainer(*args, **kwargs)
        trainer.add_callback(RecordSteps())
        return trainer

    run.build_trainer = build_recording_trainer
    return run.main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
