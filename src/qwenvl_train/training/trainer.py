"""The Trainer: a thin ``transformers.Trainer`` subclass, and the optimizer split it makes for ``--vision_lr``.

What it adds to the stock Trainer:

- a non-finite loss stops training at once, with the step named (:class:`NonFiniteLossError`);
- every folder it saves gets the files that make it load on its own (:func:`.run_checkpoints.write_model_files`);
- length-grouped sampling and ``--packing`` draw their batches from seed + epoch (:mod:`.sampler`);
- ``--vision_lr``: the vision tower's parameters get their own peak learning rate (:func:`split_vision_groups`);
- ``--vision_cache``: the batches' images go through the frozen-vision feature cache (:mod:`.vision_cache`);
- ``--eval_data``: answers generated and scored at each evaluation (:mod:`.generation_eval`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import Trainer

from ..errors import UserError
from ..model.parameter_names import part_of
from .generation_eval import GenerationEvalMixin
from .run_checkpoints import write_model_files
from .sampler import EpochSeededSampler, PackedBatchSampler


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite."""


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
        """The stock loader, or with ``--packing`` one packed row per micro-batch (see :mod:`.sampler`)."""
        if not getattr(self.args, "packing", False):
            return super().get_train_dataloader()
        from functools import partial

        from transformers.trainer_utils import seed_worker

        from ..data.collator import PackingCollator

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
    vision-tower parameters (ViT and resampler, as :func:`qwenvl_train.model.parameter_names.part_of` names
    them), which get ``lr=vision_lr``; returns ``optimizer``."""
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
