"""``train()``: fine-tune Qwen-VL in one of three modes, on one device or many.

    python -m qwenvl_train.train --model_name_or_path Qwen/Qwen-VL-Chat --data_path data/train.json \\
        --tune lora --bf16 --output_dir output_qwen
    torchrun --nproc_per_node 8 -m qwenvl_train.train --deepspeed ds_configs/zero2.json ...  # finetune/*.sh

Run with ``--help`` for every option; ``--config FILE.yaml`` supplies any of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from transformers import PreTrainedTokenizerBase, set_seed

from ..data.collator import DataCollator
from ..data.dataset import ConversationDataset
from .arguments import Arguments, parse_args, settings_line
from .prepare import (
    check_adapter_holds_trainables,
    count_parameters,
    load_model,
    load_tokenizer,
    prepare_model,
    summarize_trainable,
)
from .trainer import (
    QwenVLTrainer,
    StartSummaryCallback,
    effective_batch_size,
    format_count,
    resolve_resume,
    run_vision_every_step,
    setup_distributed,
)


def train(argv: Sequence[str] | None = None) -> QwenVLTrainer:
    """Parse arguments, then load, prepare, train and save. Returns the Trainer (for tests and notebooks)."""
    args = parse_args(argv)
    setup_distributed(args.training)
    set_seed(
        args.training.seed
    )  # before the adapters are initialized, so a run is reproducible from its seed
    tokenizer = load_tokenizer(args)
    model = prepare_model(load_model(args), args)
    train_set, eval_set = build_datasets(args, tokenizer, model)
    trainer = build_trainer(args, model, tokenizer, train_set, eval_set)
    trainer.train(
        resume_from_checkpoint=resolve_resume(args.training.resume_from_checkpoint, args.training.output_dir)
    )
    save(trainer)
    finish_reporting(args)
    return trainer


def build_datasets(
    args: Arguments, tokenizer: PreTrainedTokenizerBase, model: nn.Module
) -> tuple[ConversationDataset, ConversationDataset | None]:
    """Training (and optional evaluation) datasets, rendered for this model's image size and query count."""
    data = args.data
    options = dict(
        max_len=data.model_max_length,
        truncation=data.truncation,
        on_error=data.on_error,
        policy=data.label_policy,
        verify_images=data.verify_images,
    )
    config = model.config
    train_set = ConversationDataset.from_model(data.data_path, tokenizer, config, **options)
    eval_set = (
        ConversationDataset.from_model(data.eval_data_path, tokenizer, config, **options)
        if data.eval_data_path
        else None
    )
    return train_set, eval_set


def build_trainer(
    args: Arguments,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    train_set: ConversationDataset,
    eval_set: ConversationDataset | None = None,
) -> QwenVLTrainer:
    """The Trainer, with the one-line start summary attached."""
    if args.model.tune != "full":
        check_adapter_holds_trainables(model)
    if args.training.deepspeed or args.training.fsdp:
        # DeepSpeed's and FSDP's collectives follow the modules that run; all ranks must run the same ones.
        run_vision_every_step(model)
    trainer = QwenVLTrainer(
        model=model,
        args=args.training,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DataCollator(pad_id=tokenizer.pad_token_id),
        processing_class=tokenizer,
    )
    trainer.add_callback(StartSummaryCallback(start_summary(args, model, train_set)))
    return trainer


def start_summary(args: Arguments, model: nn.Module, train_set: ConversationDataset) -> str:
    """Mode, parameters, samples, world size, effective batch, then the hyper-parameters."""
    counts = count_parameters(model)
    summary = train_set.summary
    parts = ", ".join(f"{part} {state}" for part, state in sorted(summarize_trainable(model).items()))
    return (
        f"qwenvl-train: mode {args.model.tune} | trainable {format_count(counts.trainable)} of "
        f"{format_count(counts.total)} parameters ({100 * counts.trainable / max(counts.total, 1):.2f}%; {parts}) | "
        f"samples {summary.kept} kept, {summary.samples_read - summary.kept} dropped "
        f"({summary.dropped_too_long} too long, {summary.skipped} bad), {summary.cut} cut | "
        f"world size {args.training.world_size} | effective batch {effective_batch_size(args.training)}\n"
        + settings_line(args)
    )


def save(trainer: QwenVLTrainer) -> None:
    """Write the final model (or adapter) with config, generation config and tokenizer to ``--output_dir``."""
    trainer.save_model()
    trainer.save_state()


def finish_reporting(args: Arguments) -> None:
    """Close the wandb run this training opened, so its summary is written now rather than at interpreter exit."""
    report_to = args.training.report_to or []
    if "wandb" in report_to or "all" in report_to:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry: ``qwenvl-train train ...`` / ``python -m qwenvl_train.train ...``."""
    train(argv)
    return 0
