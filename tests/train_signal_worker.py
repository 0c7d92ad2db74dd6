"""Run ``qwenvl_train.train`` in this process (alone or as one rank under torchrun) and send it SIGTERM mid-run, as a
cluster scheduler does before it preempts a job.

Used by tests/test_train_preemption.py as ``python tests/train_signal_worker.py [train options]`` (or under torchrun):

- ``SIGNAL_AT_STEP=N``: while step N runs (at its start), the process sends itself ``SIGNAL`` (default ``SIGTERM``)
  ``SIGNAL_COUNT`` times (default 1); 0 or unset: no signal.
- ``SIGNAL_RANK``: under torchrun, only that rank signals itself (default: every rank).
- ``STEPS_FILE``: each optimizer step this process runs (1, 2, ...) is appended to it, one a line (rank 0 only).
"""

from __future__ import annotations

import os
import signal
import sys

from transformers import TrainerCallback

import qwenvl_train.training.run as run

AT_STEP = int(os.environ.get("SIGNAL_AT_STEP") or 0)
SIGNUM = getattr(signal, os.environ.get("SIGNAL") or "SIGTERM")
COUNT = int(os.environ.get("SIGNAL_COUNT") or 1)
RANK = int(os.environ.get("RANK", "0") or 0)
SIGNAL_RANK = os.environ.get("SIGNAL_RANK")


class SignalMidStep(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        step = state.global_step + 1
        if RANK == 0 and os.environ.get("STEPS_FILE"):
            with open(os.environ["STEPS_FILE"], "a") as fh:
                fh.write(f"{step}\n")
        if step == AT_STEP and (SIGNAL_RANK is None or int(SIGNAL_RANK) == RANK):
            for _ in range(COUNT):
                os.kill(os.getpid(), SIGNUM)
        return control


def main() -> int:
    build_trainer = run.build_trainer

    def build_signalled_trainer(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        trainer = build_trainer(*args, **kwargs)
        trainer.add_callback(SignalMidStep())
        return trainer

    run.build_trainer = build_signalled_trainer
    return run.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
