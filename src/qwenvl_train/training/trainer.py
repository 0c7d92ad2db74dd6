"""The Trainer: a thin ``transformers.Trainer`` subclass plus the helpers around it.

What it adds to the stock Trainer:

- a non-finite loss stops training at once, with the step named (:class:`NonFiniteLossError`);
- every saved folder (checkpoints and the final one) is self-contained: the model (with ``config.json``) or
  the adapter (with ``adapter_config.json``), ``generation_config.json`` and the tokenizer files, so it loads
  directly with ``AutoModelForCausalLM.from_pretrained(folder)``;
- length-grouped sampling uses the lengths the dataset computed (no image is loaded to measure a sample), with
  an order that depends only on the seed and the epoch, so a resumed run sees the same batches;
- ``--packing``: padding-free micro-batches of up to ``--packing_tokens`` tokens (:mod:`.packing`), one row each;
- ``--resume_from_checkpoint auto`` takes the newest *complete* checkpoint (a save killed half-way is skipped).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import UserError
from .generation_eval import GenerationEvalMixin
from .prepare import part_of

TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """``--resume_from_checkpoint`` names a folder that is not a complete checkpoint."""


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite."""


class EpochSeededSampler(torch.utils.data.Sampler[int]):
    """Wraps a sampler factory so that epoch ``e`` always draws the same order (seed + e), whatever RNG calls
    happened before: a resumed run replays exactly the order of an uninterrupted one."""

    def __init__(self, make_sampler: Any, length: int, seed: int) -> None:
        self.make_sampler = make_sampler
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return iter(self.make_sampler(generator))


class QwenVLTrainer(GenerationEvalMixin, Trainer):
    """``transformers.Trainer`` with the checks and saving rules of this project (see the module docstring).

    Attributes:
        replaced_samples: samples this process trained or evaluated in place of one whose image failed to load
            (``--on_error skip``; the collator's ``replaced_samples``, taken out of the batch here).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replaced_samples = 0
        #: ``--vision_cache``: a :class:`~.vision_cache.VisionFeatureCache` the batches' images go through.
        self.vision_cache: Any = None

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer; with ``--vision_lr`` each of its parameter groups is split in two, the vision
        tower's parameters (``transformer.visual.*``) getting their own peak learning rate (the scheduler scales
        every group's own rate)."""
        optimizer = super().create_optimizer(model)
        vision_lr = getattr(self.args, "vision_lr", None)
        if vision_lr is None or optimizer is None:
            return optimizer
        self.optimizer = split_vision_groups(optimizer, self.model if model is None else model, vision_lr)
        return self.optimizer

    def _take_batch(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Count the replaced samples the collator reports; with ``--vision_cache`` swap the pixels for the
        cached (or freshly computed and stored) image features."""
        self.replaced_samples += int(inputs.pop("replaced_samples", 0))
        if self.vision_cache is not None:
            inputs = self.vision_cache.replace_pixels(inputs)
        return inputs

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        inputs = self._take_batch(inputs)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            step = self.state.global_step + 1
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at step {step} of {self.state.max_steps} "
                f"(epoch {self.state.epoch or 0:.2f}); training stopped. Lower --learning_rate, use bf16 or fp32 "
                f"instead of fp16, or check the data; the last good checkpoint is in {self.args.output_dir}"
            )
        return loss

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        inputs = self._take_batch(inputs)
        return super().prediction_step(model, inputs, *args, **kwargs)

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """The stock loader, or with ``--packing`` one packed row per micro-batch (see :mod:`.packing`)."""
        if not getattr(self.args, "packing", False):
            return super().get_train_dataloader()
        from functools import partial

        from transformers.trainer_utils import seed_worker

        from ..data.collator import PackingCollator
        from .packing import PackedBatchSampler

        dataset = self.train_dataset
        if not hasattr(dataset, "lengths"):
            raise ValueError(
                "--packing needs a dataset that knows its samples' lengths (ConversationDataset)"
            )
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        args = self.args
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=PackedBatchSampler(dataset.lengths.tolist(), args.packing_tokens, seed),
            collate_fn=PackingCollator(),
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            prefetch_factor=args.dataloader_prefetch_factor,
            worker_init_fn=partial(
                seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index
            ),
        )
        return self.accelerator.prepare(loader)

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "lengths"):
            from ..data.dataset import length_grouped_sampler

            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededSampler(
                lambda generator: length_grouped_sampler(dataset, batch, generator=generator),
                len(dataset),
                seed,
            )
        return super()._get_train_sampler(train_dataset)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            write_model_files(self.accelerator.unwrap_model(self.model), output_dir or self.args.output_dir)


def split_vision_groups(
    optimizer: torch.optim.Optimizer, model: nn.Module, vision_lr: float
) -> torch.optim.Optimizer:
    """Split each parameter group of ``optimizer`` (created, not yet stepped) in place into the rest and its
    vision-tower parameters (ViT and resampler, as :func:`.prepare.part_of` names them), which get
    ``lr=vision_lr``; returns ``optimizer``."""
    vision = {id(p) for name, p in model.named_parameters() if part_of(name) != "llm"}
    groups = []
    for group in optimizer.param_groups:
        settings = {key: value for key, value in group.items() if key != "params"}
        rest = [p for p in group["params"] if id(p) not in vision]
        own = [p for p in group["params"] if id(p) in vision]
        if rest:
            groups.append({**settings, "params": rest})
        if own:
            groups.append({**settings, "params": own, "lr": vision_lr})
    optimizer.param_groups = []
    for group in groups:
        optimizer.add_param_group(group)
    return optimizer


def write_model_files(model: nn.Module, output_dir: str | os.PathLike[str]) -> None:
    """Write ``generation_config.json`` next to an adapter (``save_pretrained`` of a full model already does).

    An adapter folder deliberately gets no ``config.json``: with one, ``AutoModelForCausalLM.from_pretrained``
    would take the folder for a complete model; without it, both that and ``AutoPeftModelForCausalLM`` load the
    base named in ``adapter_config.json`` and apply the adapter.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    generation_config = getattr(base, "generation_config", None)
    out = Path(output_dir)
    if generation_config is not None and not (out / "generation_config.json").exists():
        generation_config.save_pretrained(out)


class StartSummaryCallback(TrainerCallback):
    """Prints one line when training starts: mode, parameters, samples, world size, effective batch."""

    def __init__(self, line: str) -> None:
        self.line = line

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            print(self.line, flush=True)


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


def effective_batch_size(args: TrainingArguments) -> int:
    """Samples per optimizer step over all processes."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)


def format_count(n: int) -> str:
    """12345678 -> '12.3M'."""
    if n < 1000:
        return str(n)
    exp = min(int(math.log10(n) // 3), 4)
    return f"{n / 10 ** (3 * exp):.3g}{' KMGT'[exp]}"


def setup_distributed(args: TrainingArguments) -> None:
    """Everything that must happen before the model is loaded in a distributed run.

    - ZeRO-3 partitions the weights while ``from_pretrained`` builds the model, which needs the process group.
    - FSDP on a machine without GPU: accelerate would silently fall back to DDP; mark the state multi-GPU so that
      FSDP2 really shards (what lets the launchers and tests run FSDP on CPU).
    """
    _ = args.device  # initializes torch.distributed under torchrun
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        import deepspeed

        backend = args.ddp_backend or ("nccl" if torch.cuda.is_available() else "gloo")
        deepspeed.init_distributed(dist_backend=backend)
    if args.fsdp and not torch.cuda.is_available():
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU


def run_vision_every_step(model: nn.Module) -> None:
    """Make the model run its vision tower at every step, on a blank image when the batch has none.

    ZeRO-3 and FSDP gather each module's shards collectively, in the order modules run (ZeRO-3 replays the order
    it recorded, forward and backward), and ZeRO-2 reduces gradients in buckets as they become ready: a text-only
    batch on one rank next to an image batch on another would have the ranks call different collectives and hang
    or crash. The model does it itself (``QwenVLModel.set_vision_every_step``), inside its image splice, so the
    modules run in the same order, forward and backward, with or without images.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.transformer.set_vision_every_step(True)
