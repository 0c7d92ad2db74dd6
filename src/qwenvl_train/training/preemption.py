"""Preemption: a run told to stop by its scheduler saves where it is and says how to go on.

SIGTERM (what cluster schedulers send before they preempt or cancel a job) and SIGUSR1 (what SLURM sends ahead of
time with ``--signal=USR1@SECONDS``) no longer end training at once: the step under way finishes, a complete
checkpoint is written (the Trainer's own, with optimizer, scheduler and RNG state), and the run ends with exit status
:data:`PREEMPTED_STATUS` and one line naming the checkpoint and ``--resume_from_checkpoint auto``. A second signal
stops at once (the default action of that signal).

Under torchrun every rank watches for the signal, but the signal may reach the ranks during different steps (or only
some of them): at the end of every step the ranks agree with one all-reduce of a flag (its maximum), so that all of
them stop after the same step and write one consistent checkpoint. A run resumed from it continues exactly as an
uninterrupted one would (the checkpoint is an ordinary one).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any

from transformers import TrainerCallback

#: The signals that ask for a checkpoint and a clean stop.
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
#: Exit status of a run stopped by one of them after its checkpoint was written: ``EX_TEMPFAIL`` (sysexits.h),
#: "try again later": resume it with ``--resume_from_checkpoint auto``.
PREEMPTED_STATUS = 75


class PreemptionCallback(TrainerCallback):
    """Turns :data:`SIGNALS` into "save a checkpoint after this step, then stop" (see the module docstring).

    :meth:`install` when training starts, :meth:`uninstall` when it ends (the handlers that were there come back).

    Attributes:
        received: the name of the signal received (None: none yet).
        stopped_at: the step after which training stopped for it (None: it did not).
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self.stopped_at: int | None = None
        self._previous: dict[int, Any] = {}
        self._pid = 0

    def install(self) -> None:
        """Handle :data:`SIGNALS` in this process (only from the main thread, where Python runs handlers)."""
        self._pid = os.getpid()
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if (
            os.getpid() != self._pid
        ):  # a DataLoader worker forked with the handler: the training process decides
            return
        name = signal.Signals(signum).name
        if self.received is not None:  # asked twice: stop now, as the signal would have without us
            self.uninstall()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = name
        if _rank() == 0:
            print(
                f"qwenvl-train: {name} received: finishing this step, then saving a checkpoint and stopping "
                f"(send {name} again to stop at once, without it)",
                file=sys.stderr,
                flush=True,
            )

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.install()
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if agreed(self.received is not None, args.device):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
            self.received = self.received or "a signal on another rank"
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.uninstall()
        return control


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def agreed(flag: bool, device: Any) -> bool:
    """``flag`` on any rank (one all-reduce of its maximum under torch.distributed; ``flag`` itself otherwise)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return flag
    import torch

    backend = dist.get_backend()
    tensor = torch.tensor([int(flag)], device=device if backend != "gloo" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def preempted_line(callback: PreemptionCallback, checkpoint: str | None) -> str:
    """The one line a preempted run ends with."""
    where = f"checkpoint {checkpoint} is complete" if checkpoint else "its checkpoint is complete"
    return (
        f"stopped by {callback.received} after step {callback.stopped_at}: {where}; resume with "
        "--resume_from_checkpoint auto (same --output_dir)"
    )
