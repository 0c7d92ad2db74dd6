"""What a run says about itself when it starts, and the number formatting it uses.

The start summary is two lines printed by rank 0 when training begins (:class:`StartSummaryCallback`): the mode,
trainable and total parameters per part, the samples kept and dropped, the world size and the effective batch
(:func:`start_summary`), then the hyper-parameters that matter (:func:`settings_line`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainingArguments

from .prepare import count_parameters, has_parameter_adapters, summarize_trainable

if TYPE_CHECKING:
    from torch import nn

    from ..data.dataset import ConversationDataset
    from .arguments import Arguments


class StartSummaryCallback(TrainerCallback):
    """Prints one line when training starts: mode, parameters, samples, world size, effective batch."""

    def __init__(self, line: str) -> None:
        self.line = line

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            print(self.line, flush=True)


def start_summary(args: Arguments, model: nn.Module, train_set: ConversationDataset) -> str:
    """Mode, parameters, samples, world size, effective batch, then the hyper-parameters."""
    counts = count_parameters(model)
    summary = train_set.summary
    parts = ", ".join(f"{part} {state}" for part, state in sorted(summarize_trainable(model).items()))
    reference = (
        f", {summary.dropped_first_turns} leading assistant turns dropped"
        if summary.dropped_first_turns
        else ""
    )
    return (
        f"qwenvl-train: mode {args.model.tune} | trainable {format_count(counts.trainable)} of "
        f"{format_count(counts.total)} parameters ({100 * counts.trainable / max(counts.total, 1):.2f}%; {parts}) | "
        f"samples {summary.kept} kept, {summary.samples_read - summary.kept} dropped "
        f"({summary.dropped_too_long} too long, {summary.skipped} bad), {summary.cut} cut, "
        f"{summary.duplicate_ids} duplicate ids{reference} | "
        f"world size {args.training.world_size} | effective batch {effective_batch_size(args.training)}\n"
        + settings_line(
            args, parameter_adapters=has_parameter_adapters(model) if args.model.tune != "full" else False
        )
    )


def settings_line(args: Arguments, parameter_adapters: bool = False) -> str:
    """One line with the hyper-parameters that matter, printed at start.

    Args:
        args: the parsed options.
        parameter_adapters: some adapters sit on parameters (peft ``target_parameters``), which take no dropout:
            the line says the dropout applies to the module adapters only.
    """
    t = args.training
    dropout = f"{args.lora.lora_dropout:g}"
    if parameter_adapters and args.lora.lora_dropout:
        dropout += "(module targets; 0 on parameter targets)"
    schedule = getattr(t.lr_scheduler_type, "value", t.lr_scheduler_type)
    return (
        f"settings: tune={args.model.tune} lr={t.learning_rate:g} schedule={schedule} "
        f"warmup={t.warmup_steps:g} weight_decay={t.weight_decay:g} adam_betas=({t.adam_beta1:g}, {t.adam_beta2:g}) "
        f"model_max_length={args.data.model_max_length}"
        + (f" image_size={args.model.image_size}" if args.model.image_size is not None else "")
        + f" bf16={t.bf16} fp16={t.fp16} "
        f"activation_checkpointing={ {0: 'off', 1: 'full'}.get(t.checkpointing_every, t.checkpointing_every) }"
        + (f" packing={t.packing_tokens}" if t.packing else "")
        + (
            f" lora_r={args.lora.lora_r} lora_alpha={args.lora.lora_alpha} lora_dropout={dropout} "
            f"lora_target={','.join(args.lora.lora_target)}"
            if args.model.tune != "full"
            else ""
        )
    )


def effective_batch_size(args: TrainingArguments) -> int:
    """Samples per optimizer step over all processes."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)


def format_count(n: int) -> str:
    """12345678 -> '12.3M'."""
    if n < 1000:
        return str(n)
    exp = min(int(math.log10(n) // 3), 4)
    return f"{n / 10 ** (3 * exp):.3g}{' KMGT'[exp]}"
