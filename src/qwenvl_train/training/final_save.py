"""The final save, atomic like the checkpoints: a run killed during it never leaves a model that looks finished.

The model (or adapter), its config, generation config and tokenizer are written into ``OUTPUT/.final-save``, then
moved into ``OUTPUT`` file by file (each move a rename: no file is ever seen half-written), the weights first and
``config.json`` / ``adapter_config.json`` last; ``trainer_state.json`` is written after them all and marks the
final save complete, as it marks a checkpoint complete. The mark of an earlier final save in the same folder is
removed before anything is written, and that save's weight files before the new ones move in.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .trainer import TRAINER_STATE_NAME

#: Where the final save is written before it moves into the output folder.
STAGING_NAME = ".final-save"
#: Files of an earlier final save that the new one replaces (a sharded model may become a single file).
_REPLACED = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json",
             "adapter_model.safetensors", "adapter_model.bin")  # fmt: skip
#: Moved last: what makes a folder load as a model or as an adapter.
_LAST = ("config.json", "adapter_config.json")


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
