"""The checkpoints a run writes, and its final save: what makes one complete, resuming from one, what each folder
holds besides the weights, and the atomic final save.

- Every saved folder (checkpoints and the final one) is self-contained: the model (with ``config.json``) or the
  adapter (with ``adapter_config.json``), ``generation_config.json`` and the tokenizer files, so it loads
  directly with ``AutoModelForCausalLM.from_pretrained(folder)`` (:func:`write_model_files`).
- A checkpoint is complete once ``trainer_state.json``, the Trainer's last file, is written;
  ``--resume_from_checkpoint auto`` takes the newest *complete* checkpoint (a save killed half-way is skipped).
- The final save is atomic like the checkpoints: a run killed during it never leaves a model that looks finished.
  The model (or adapter), its config, generation config and tokenizer are written into ``OUTPUT/.final-save``,
  then moved into ``OUTPUT`` file by file (each move a rename: no file is ever seen half-written), the weights
  first and ``config.json`` / ``adapter_config.json`` last; ``trainer_state.json`` is written after them all and
  marks the final save complete, as it marks a checkpoint complete. The mark of an earlier final save in the same
  folder is removed before anything is written, and that save's weight files before the new ones move in.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import UserError
from ..model.visual_config import write_adapter_visual
from ..outputs import ordinary_mode

if TYPE_CHECKING:
    from torch import nn

#: The Trainer's last file in a checkpoint: its presence marks the checkpoint (or the final save) complete.
TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")

#: Where the final save is written before it moves into the output folder.
STAGING_NAME = ".final-save"
#: Files of an earlier final save that the new one replaces (a sharded model may become a single file).
_REPLACED = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json",
             "adapter_model.safetensors", "adapter_model.bin")  # fmt: skip
#: Moved last: what makes a folder load as a model or as an adapter.
_LAST = ("config.json", "adapter_config.json")


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """``--resume_from_checkpoint`` names a folder that is not a complete checkpoint."""


def is_complete_checkpoint(path: str | os.PathLike[str]) -> bool:
    """A checkpoint folder is complete once the Trainer wrote ``trainer_state.json``, its last file."""
    return (Path(path) / TRAINER_STATE_NAME).is_file()


def resolve_resume(value: str | None, output_dir: str) -> str | None:
    """Turn ``--resume_from_checkpoint`` into a folder (or None to start afresh).

    ``auto``: the newest complete ``checkpoint-N`` under ``output_dir``, or None when there is none. A path: that
    checkpoint, which must be complete.

    Raises:
        FileNotFoundError: a path that is not a complete checkpoint.
    """
    if value in (None, "", "no", "false", "False"):
        return None
    if value in ("auto", "true", "True"):
        root = Path(output_dir)
        if not root.is_dir():
            return None
        steps = sorted(
            (int(m.group(1)), child)
            for child in root.iterdir()
            if (m := _CHECKPOINT_RE.match(child.name)) and child.is_dir()
        )
        for _, child in reversed(steps):
            if is_complete_checkpoint(child):
                return str(child)
        return None
    if not is_complete_checkpoint(value):
        raise CheckpointNotFoundError(
            f"--resume_from_checkpoint {value}: not a complete checkpoint (no {TRAINER_STATE_NAME})"
        )
    return value


def write_model_files(model: nn.Module, output_dir: str | os.PathLike[str]) -> None:
    """Write ``generation_config.json`` next to an adapter (``save_pretrained`` of a full model already does), and
    the adapter's ``visual_config.json`` (the ``image_size`` it was trained at, ``--image_size``).

    An adapter folder deliberately gets no ``config.json``: with one, ``AutoModelForCausalLM.from_pretrained``
    would take the folder for a complete model; without it, both that and ``AutoPeftModelForCausalLM`` load the
    base named in ``adapter_config.json`` and apply the adapter. Its base's ``config.json`` may say another
    picture size than the run used, hence the record, which ``chat``/``eval``/``serve`` and ``merge`` apply.

    The weight files get the permissions of any new file (``0666`` less the umask): ``safetensors`` creates them
    ``0600``, which leaves a checkpoint or adapter unreadable to the colleague or the serving account it is for.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    generation_config = getattr(base, "generation_config", None)
    out = Path(output_dir)
    if generation_config is not None and not (out / "generation_config.json").exists():
        generation_config.save_pretrained(out)
    visual = getattr(getattr(base, "config", None), "visual", None)
    if hasattr(model, "peft_config") and isinstance(visual, dict):
        write_adapter_visual(out, visual)
    mode = ordinary_mode()
    for weights in out.glob("*.safetensors"):
        if weights.is_file() and not weights.is_symlink():
            weights.chmod(mode)


def save_final(trainer: Any) -> Path:
    """Write the final model (or adapter) with config, generation config and tokenizer, then ``trainer_state.json``,
    into ``--output_dir``. Every rank calls it (saving may be collective: ZeRO-3, FSDP).

    Returns:
        The output folder.
    """
    out = Path(trainer.args.output_dir)
    staging = out / STAGING_NAME
    if trainer.args.should_save:
        (out / TRAINER_STATE_NAME).unlink(missing_ok=True)  # not complete until the new save is
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed during its final save
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging), _internal_call=True)  # pushing to the hub (if asked) waits for the move
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        publish(staging, out)
    trainer.accelerator.wait_for_everyone()
    if trainer.args.push_to_hub:
        trainer.push_to_hub()  # (it saves into the folder again, in place: before the mark, as the Trainer did)
    trainer.save_state()  # trainer_state.json, the mark of a complete final save (written by rank 0)
    return out


def publish(staging: Path, out: Path) -> None:
    """Move everything from ``staging`` into ``out`` by renames, the files that make it loadable last."""
    for pattern in _REPLACED:
        for old in out.glob(pattern):
            if old.is_file():
                old.unlink()
    entries = sorted(staging.iterdir(), key=lambda p: (p.name in _LAST, p.name))
    for entry in entries:
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    staging.rmdir()
