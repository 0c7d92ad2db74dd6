"""``train()``: fine-tune Qwen-VL in one of three modes, on one device or many.

    python -m qwenvl_train.train --model_name_or_path Qwen/Qwen-VL-Chat --data_path data/train.json \\
        --tune lora --bf16 --output_dir output_qwen
    torchrun --nproc_per_node 8 -m qwenvl_train.train --deepspeed ds_configs/zero2.json ...  # finetune/*.sh

Run with ``--help`` for every option; ``--config FILE.yaml`` supplies any of them.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, set_seed

from ..data.collator import DataCollator
from ..data.dataset import ConversationDataset
from ..data.engine import ScanResult, scan
from ..data.errors import TrainingDataError
from ..disk_full import resume_advice, saving
from ..errors import is_rank_zero, run_reporting
from ..model.visual_config import VisionSettings, vision_settings
from .arguments import Arguments, check_devices_only, parse_args
from .benchmark_eval import attach_benchmark_evals
from .distributed import finish, run_vision_every_step, setup_distributed
from .generation_eval import attach_generation_eval
from .help import cached_help
from .preemption import PREEMPTED_STATUS, PreemptionCallback, preempted_line
from .preflight import estimate_saves, preflight
from .prepare import check_adapter_holds_trainables, load_model, load_tokenizer, prepare_model
from .run_checkpoints import resolve_resume, save_final
from .summary import StartSummaryCallback, start_summary
from .trainer import QwenVLTrainer
from .vision_cache import VisionFeatureCache, check_vision_cacheable, vision_tower


def train(argv: Sequence[str] | None = None) -> QwenVLTrainer:
    """Parse arguments, then load, prepare, train and save. Returns the Trainer (for tests and notebooks)."""
    args = parse_args(argv)
    preflight(args)  # checkpoint, output folder, disk space: before anything heavy loads
    if is_rank_zero():
        cached_help()  # so that `qwenvl-train train --help` answers at once from now on
    setup_distributed(args.training)
    set_seed(
        args.training.seed
    )  # before the adapters are initialized, so a run is reproducible from its seed
    tokenizer = load_tokenizer(args)
    train_set, eval_set = build_datasets(args, tokenizer)  # before the model: bad data fails in seconds
    model = prepare_model(load_model(args), args)
    trainer = build_trainer(args, model, tokenizer, train_set, eval_set)
    out = args.training.output_dir
    estimate = estimate_saves(args)
    with saving(  # a checkpoint: a full disk ends the run with one line, the last complete checkpoint named
        out,
        lambda: f"checkpoint-{trainer.state.global_step}",
        estimate.checkpoint if estimate else None,
        lambda: resume_advice(resolve_resume("auto", out)),
    ):
        trainer.train(resume_from_checkpoint=resolve_resume(args.training.resume_from_checkpoint, out))
    report_replaced_samples(trainer)
    if trainer.preemption.stopped_at is not None:
        # stopped by SIGTERM / SIGUSR1 after its checkpoint: no final save, the run goes on when resumed
        last = resolve_resume("auto", args.training.output_dir)
        trainer.preempted = preempted_line(trainer.preemption, last)
        finish_reporting(args)
        return trainer
    if trainer.vision_cache is not None:
        cache = trainer.vision_cache
        print(
            f"qwenvl-train: vision cache {cache.root}: {cache.hits} image(s) read, {cache.misses} computed",
            flush=True,
        )
    kind = "model" if args.model.tune == "full" else "adapter"
    with saving(out, f"the final {kind}", estimate.final if estimate else None, lambda: final_advice(out)):
        save(trainer)
    finish_reporting(args)
    return trainer


def final_advice(out: str) -> str:
    """Where the trained weights are when the final save ran out of space: the last complete checkpoint, or only in
    the memory of the process that just ended."""
    checkpoint = resolve_resume("auto", out)
    if checkpoint:
        return resume_advice(checkpoint)
    return (
        "no checkpoint holds the trained weights (--save_strategy steps keeps some): free some space and train "
        "again"
    )


def model_vision_settings(model_name_or_path: str) -> VisionSettings:
    """``n_queries`` / ``image_size`` of the checkpoint, from its ``config.json`` alone (no weights loaded)."""
    if Path(model_name_or_path).is_dir():
        return vision_settings(model_name_or_path)
    from transformers import AutoConfig

    return vision_settings(AutoConfig.from_pretrained(model_name_or_path))


def build_datasets(
    args: Arguments, tokenizer: PreTrainedTokenizerBase
) -> tuple[ConversationDataset, ConversationDataset | None]:
    """Scan the training (and optional evaluation) data for this checkpoint's image span, or read the scan from
    the cache (one process per machine scans while the others wait), check that every rank reached the same
    verdict, and apply the error policy.

    Raises:
        TrainingDataError: errors under ``--on_error raise``, no sample left, or ranks that disagree.
    """
    settings = model_vision_settings(args.model.model_name_or_path)
    if (
        args.model.image_size is not None
    ):  # --image_size: pictures resized to it (the scan depends on n_queries only)
        settings = settings._replace(image_size=args.model.image_size)
    scans = [scan(args.data.data_path, tokenizer, args.data, n_queries=settings.n_queries)]
    eval_paths = args.data.eval_data_path or args.data.eval_data  # --eval_data alone gives the loss too
    if eval_paths:
        scans.append(scan(eval_paths, tokenizer, args.data, n_queries=settings.n_queries))
    for result in scans:  # which process scanned, or where the scan was read from
        print(f"qwenvl-train: {result.provenance}", flush=True)
    agree_across_ranks(scans)
    datasets = [ConversationDataset(result, image_size=settings.image_size) for result in scans]
    return datasets[0], datasets[1] if len(datasets) > 1 else None


def scan_fingerprint(result: ScanResult) -> str:
    """What a rank concluded from a scan: its errors and the lengths of the items it kept."""
    digest = hashlib.sha256(result.items.lengths.tobytes())
    digest.update("\n".join(map(str, result.summary.errors)).encode())
    return f"{len(result.summary.errors)} errors, {len(result.items)} samples kept, {digest.hexdigest()[:12]}"


def agree_across_ranks(results: Sequence[ScanResult]) -> None:
    """Every rank scans the same files and must reach the same verdict and keep the same samples, or the ranks
    would run different numbers of steps (and hang). Normally they do; when the files change during the scan
    or a URL fails on some ranks only, stop every rank with the same message.

    Raises:
        TrainingDataError: the ranks disagree.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    if world == 1:
        return
    mine = [scan_fingerprint(result) for result in results]
    everyone: list[list[str] | None] = [None] * world
    torch.distributed.all_gather_object(everyone, mine)
    if any(theirs != everyone[0] for theirs in everyone):
        ranks = "; ".join(f"rank {rank}: {' / '.join(found or [])}" for rank, found in enumerate(everyone))
        raise TrainingDataError(
            f"the ranks read different data ({ranks}): did the files change during the scan, or a URL fail on "
            "some ranks only? Run `qwenvl-train check-data` and start again"
        )


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
    if args.model.vision_cache:
        check_vision_cacheable(model)
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
    if args.model.vision_cache:
        trainer.vision_cache = VisionFeatureCache(
            args.model.vision_cache, vision_tower(model), autocast=trainer.accelerator.autocast
        )
    trainer.add_callback(StartSummaryCallback(start_summary(args, model, train_set)))
    trainer.preemption = PreemptionCallback()  # SIGTERM / SIGUSR1: a checkpoint after this step, then stop
    trainer.preempted = None
    trainer.add_callback(trainer.preemption)
    if args.data.eval_data:
        attach_generation_eval(
            trainer, args.data.eval_data, tokenizer, args.data.on_error, args.data.eval_max_new_tokens
        )
    if args.data.eval_benchmark:
        attach_benchmark_evals(trainer, args.data.eval_benchmark, tokenizer, args.data.on_error)
    return trainer


def report_replaced_samples(trainer: QwenVLTrainer) -> int:
    """Samples replaced because an image failed to load (``--on_error skip``), summed over the ranks; printed
    once and logged (``replaced_samples``) when there were any. Every rank must call it (a collective)."""
    count = torch.tensor(trainer.replaced_samples, device=trainer.args.device)
    total = int(trainer.accelerator.reduce(count, reduction="sum").item())
    if total:
        if trainer.is_world_process_zero():
            print(
                f"qwenvl-train: {total} sample(s) replaced by the next sample because an image failed to load "
                "(--on_error skip; the warnings above name them)",
                flush=True,
            )
        trainer.log({"replaced_samples": total})
    return total


def save(trainer: QwenVLTrainer) -> None:
    """Write the final model (or adapter) with config, generation config and tokenizer to ``--output_dir``,
    atomically (see :mod:`.run_checkpoints`)."""
    save_final(trainer)


def finish_reporting(args: Arguments) -> None:
    """Close the wandb run this training opened, so its summary is written now rather than at interpreter exit."""
    report_to = args.training.report_to or []
    if "wandb" in report_to or "all" in report_to:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry: ``qwenvl-train train ...`` / ``python -m qwenvl_train.train ...``.

    An error the product knows (bad data, options, checkpoint, preparation) ends the run with one line on stderr
    (its errors as lines for bad data), without a traceback (``QWENVL_TRAIN_DEBUG=1`` shows it), and exit status 1:
    printed once, by rank 0, since every rank meets the same error; an image failing during training
    (``--on_error raise``) is printed by the rank that loaded it. Either way the command ends through
    :func:`.distributed.finish`: the process group is left, and a rank started by a launcher ends its process there.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--preflight_only" in argv:
        return run_reporting(preflight_only, argv, prefix="qwenvl-train: ", ending=finish)
    if "--check_devices_only" in argv:  # finetune/launch.sh, once before torchrun
        argv.remove("--check_devices_only")
        return run_reporting(check_devices_only, argv, prefix="qwenvl-train: ", ending=finish)
    return run_reporting(train_to_the_end, argv, prefix="qwenvl-train: ", ending=finish)


def train_to_the_end(argv: Sequence[str]) -> int:
    """Train, then leave the process group (after a barrier); exit status 0, or :data:`.preemption.PREEMPTED_STATUS`
    with one line when SIGTERM / SIGUSR1 stopped it after a checkpoint. A rank started by a launcher then ends
    its process at once (:func:`.distributed.finish`: no interpreter teardown, which could abort a rank of a run
    that finished and make torchrun report it failed)."""
    trainer = train(argv)
    if trainer.preempted:
        if is_rank_zero():
            print(f"qwenvl-train: {trainer.preempted}", file=sys.stderr, flush=True)
        return finish(PREEMPTED_STATUS, barrier=True)
    return finish(0, barrier=True)


def preflight_only(argv: Sequence[str]) -> int:
    """``--preflight_only``: parse the options and run the pre-flight checks, nothing else; exit status 0."""
    preflight(parse_args(argv))
    if is_rank_zero():
        print("qwenvl-train: pre-flight checks passed", flush=True)
    return 0
