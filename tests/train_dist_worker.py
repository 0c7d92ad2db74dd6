"""Run ``qwenvl_train.train`` under torchrun and record, per rank, how the model is really distributed.

Used by tests/test_train_distributed.py as ``torchrun ... tests/train_dist_worker.py [train options]``; the facts
go to ``$PROBE_FILE.<rank>`` (JSON) after the first optimizer step, when the model is wrapped and sharded, and again
at the end of training with ``images_per_step``: the number of images in this rank's batch at each optimizer step
(steps 1, 2, ...), so a test can check the ranks really had text-only and image batches side by side.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from transformers import TrainerCallback

import qwenvl_train.training.run as run


def facts_about(trainer) -> dict:  # noqa: ANN001
    model = trainer.model
    params = list(model.named_parameters())
    facts: dict = {
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "ddp": isinstance(trainer.model_wrapped, torch.nn.parallel.DistributedDataParallel),
        "deepspeed": bool(trainer.is_deepspeed_enabled),
        "fsdp": bool(trainer.is_fsdp_enabled),
        "lr_scheduler": type(trainer.lr_scheduler).__name__,
        "trainable": sum(1 for _, p in params if p.requires_grad),
    }
    if trainer.is_deepspeed_enabled:
        facts["zero_stage"] = trainer.deepspeed.zero_optimization_stage()
        zero3 = [p for _, p in params if hasattr(p, "ds_numel")]
        facts["zero3_params"] = len(zero3)
        facts["zero3_partitioned"] = sum(1 for p in zero3 if p.ds_tensor.numel() < p.ds_numel)
        facts["zero3_local_numel"] = sum(p.ds_tensor.numel() for p in zero3)
        facts["zero3_full_numel"] = sum(p.ds_numel for p in zero3)
    if trainer.is_fsdp_enabled:
        from torch.distributed.tensor import DTensor

        dtensors = [p for _, p in params if isinstance(p, DTensor)]
        facts["dtensor_params"] = len(dtensors)
        facts["params"] = len(params)
        facts["dtensor_sharded"] = sum(1 for p in dtensors if p.to_local().numel() < p.numel())
    return facts


class Probe(TrainerCallback):
    """Writes the facts after step 1; counts the images of every batch this rank trains on (wraps
    ``training_step``, which sees the collated batch: ``pixel_values`` only when the batch has images)."""

    def __init__(self, trainer, path: str) -> None:  # noqa: ANN001
        self.trainer = trainer
        self.path = path
        self.facts: dict = {}
        self.images_per_step: list[int] = []
        training_step = trainer.training_step

        def counting_training_step(model, inputs, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            if trainer.args.gradient_accumulation_steps != 1:
                raise AssertionError("images_per_step assumes one batch per optimizer step")
            pixels = inputs.get("pixel_values")
            self.images_per_step.append(0 if pixels is None else int(pixels.shape[0]))
            return training_step(model, inputs, *args, **kwargs)

        trainer.training_step = counting_training_step

    def write(self) -> None:
        with open(self.path, "w") as fh:
            json.dump({**self.facts, "images_per_step": self.images_per_step}, fh)

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        if state.global_step == 1:
            self.facts = facts_about(self.trainer)
            self.write()
        return control

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.write()
        return control


def main() -> int:
    path = f"{os.environ['PROBE_FILE']}.{os.environ.get('RANK', '0')}"
    build_trainer = run.build_trainer

    def build_probed_trainer(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        trainer = build_trainer(*args, **kwargs)
        trainer.add_callback(Probe(trainer, path))
        return trainer

    run.build_trainer = build_probed_trainer
    return run.main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
