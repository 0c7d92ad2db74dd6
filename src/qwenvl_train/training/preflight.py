"""Checks made before the model (or the data) loads, so that a run that cannot finish stops in seconds:

- the checkpoint's layout (``config.json``, ``qwen.tiktoken``), its kind (chat or base) when LoRA needs it, and
  whether ``--quant`` fits its weights (:mod:`.base_checkpoint`);
- the output folder is writable;
- the disk holds what the run will save (the final model or adapter, plus ``--save_total_limit`` checkpoints
  with their optimizer state): a warning with both figures when it will not.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from ..disk_full import format_bytes
from ..errors import ConfigurationError, is_rank_zero
from ..model.parameter_names import matches_target
from ..outputs import check_output_folder
from .arguments import Arguments
from .base_checkpoint import check_layout, resolve_kind, weight_shapes
from .prepare import BASE_MODULES_TO_SAVE, resolve_quant

#: Bytes of optimizer state per trainable parameter in a checkpoint (AdamW: two fp32 moments).
OPTIMIZER_BYTES = 8
#: Files every save copies from the checkpoint besides the weights: the tokenizer's, the configs.
ALONGSIDE_FILES = ("qwen.tiktoken", "tokenizer_config.json", "special_tokens_map.json", "config.json",
                   "generation_config.json")  # fmt: skip
#: What else a save writes (trainer state, training arguments, scheduler and RNG state, an adapter's README).
SMALL_FILES_BYTES = 64 << 10


def preflight(args: Arguments) -> None:
    """Every check above; fills in ``args.model.checkpoint_kind`` when LoRA's defaults depend on it.

    Raises:
        CheckpointError, ConfigurationError, PreparationError: one line saying what to change.
    """
    model = args.model.model_name_or_path
    check_layout(model)
    if args.model.tune != "full" and args.lora.modules_to_save is None:
        args.model.checkpoint_kind = resolve_kind(model, args.model.checkpoint_kind)
    resolve_quant(args.model, args.quant)
    check_output_dir(args.training.output_dir)
    if is_rank_zero():
        warning = disk_space_warning(args)
        if warning:
            print(f"qwenvl-train: warning: {warning}", file=sys.stderr, flush=True)


def check_output_dir(path: str | os.PathLike[str]) -> None:
    """The output folder can be written: a file is written (and removed) in it when it exists; else the nearest
    existing folder above it must be a writable folder. Nothing is created (a run stopped later by bad data
    leaves nothing behind).

    Raises:
        OutputError: it, or a path above it, is not a folder (a file, a device, a dangling symlink).
        ConfigurationError: it cannot be created or written.
    """
    check_output_folder(path, "--output_dir")
    folder = Path(path).absolute()
    try:
        if folder.is_dir():
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".qwenvl-train-write-test-"):
                pass
            return
        parent = folder
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot create folders in {parent}")
    except OSError as exc:
        raise ConfigurationError(f"--output_dir {path}: not writable ({exc.strerror or exc})") from None


class SaveEstimate(NamedTuple):
    """Bytes the run will write: the final save, one checkpoint, and how many checkpoints are kept."""

    final: int
    checkpoint: int
    checkpoints: int

    @property
    def total(self) -> int:
        return self.final + self.checkpoint * self.checkpoints


def estimate_saves(args: Arguments) -> SaveEstimate | None:
    """What the run will save, from the shapes in the checkpoint's safetensors headers (None without them)."""
    shapes = weight_shapes(args.model.model_name_or_path)
    if not shapes:
        return None
    dtype = args.model.dtype
    weight_bytes = 4 if dtype == "float32" or (dtype == "auto" and not args.training.bf16) else 2
    numel = {name: _numel(shape) for name, (shape, _) in shapes.items()}
    if args.model.tune == "full":
        trainable = sum(numel.values())
        final = trainable * weight_bytes
        checkpoint = final + trainable * OPTIMIZER_BYTES
    else:
        lora = 0
        for name, (shape, _) in shapes.items():
            module, _, kind = name.rpartition(".")
            if (
                len(shape) == 2
                and kind in ("weight", "qweight")
                and matches_target(module, args.lora.lora_target)
            ):
                rows, cols = (shape[0] * 8, shape[1]) if kind == "qweight" else (shape[1], shape[0])
                lora += args.lora.lora_r * (rows + cols)
        saved = args.lora.modules_to_save
        if saved is None:
            saved = BASE_MODULES_TO_SAVE if args.model.checkpoint_kind == "base" else []
        full = sum(n for name, n in numel.items() if matches_target(name.rpartition(".")[0], saved))
        final = lora * 4 + full * weight_bytes  # adapters are kept in fp32
        checkpoint = final + (lora + full) * OPTIMIZER_BYTES
    alongside = saved_alongside(args.model.model_name_or_path)  # every save writes the tokenizer's files too
    strategy = getattr(args.training.save_strategy, "value", args.training.save_strategy)
    kept = 0 if strategy == "no" else (args.training.save_total_limit or 1)
    return SaveEstimate(final + alongside, checkpoint + alongside, kept)


def saved_alongside(model_dir: str) -> int:
    """Bytes a save writes besides the weights: :data:`ALONGSIDE_FILES` as they are in ``model_dir`` (the
    tokenizer's vocabulary, 2.5 MB, is most of it: more than a small LoRA adapter) and :data:`SMALL_FILES_BYTES`."""
    total = SMALL_FILES_BYTES
    for name in ALONGSIDE_FILES:
        try:
            total += (Path(model_dir) / name).stat().st_size
        except OSError:
            pass
    return total


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n


def disk_space_warning(args: Arguments) -> str | None:
    """A line when the free space under ``--output_dir`` is less than what the run will save, else None."""
    estimate = estimate_saves(args)
    if estimate is None:
        return None
    folder = Path(args.training.output_dir).absolute()
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free >= estimate.total:
        return None
    limit = (
        "" if args.training.save_total_limit else " (no --save_total_limit: counted once, more may be kept)"
    )
    return (
        f"{args.training.output_dir} has {format_bytes(free)} free, but this run will save about "
        f"{format_bytes(estimate.total)}: the final {'model' if args.model.tune == 'full' else 'adapter'} "
        f"{format_bytes(estimate.final)} + {estimate.checkpoints} checkpoint(s) of {format_bytes(estimate.checkpoint)}"
        f"{limit}; free some space, or lower --save_total_limit"
    )
