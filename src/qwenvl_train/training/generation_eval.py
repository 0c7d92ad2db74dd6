"""``--eval_data``: generation metrics at every evaluation of a training run, logged like the loss.

    qwenvl-train train ... --eval_data data/val.json --eval_strategy steps --eval_steps 200

At each evaluation (``--eval_strategy``/``--eval_steps``) and once more at the end of training, the model answers
the last turn of every ``--eval_data`` conversation by greedy generation (``--eval_max_new_tokens``, default the
checkpoint's generation_config) and the answers are scored as ``qwenvl-train eval`` scores them. The metrics join
``eval_loss`` in the same log entry: ``eval_acc@0.5`` and ``eval_mean_iou`` (box answers), ``eval_exact_match``
(the others); so they reach the console, ``trainer_state.json`` and wandb, and can be ``--metric_for_best_model``.

How it relates to ``--eval_data_path`` (the loss): the loss is computed on ``--eval_data_path`` when it is given,
else on the ``--eval_data`` files; generation always uses ``--eval_data``.

Under torchrun the samples are split over the ranks and the results gathered; every rank runs the same number of
``generate`` calls in step (``synced_gpus``), which ZeRO-3 and FSDP need because each forward gathers weights from
all ranks.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..errors import UserError
from ..inference.evaluate import EvalSample, generate_answers, read_eval_samples
from ..inference.generation import chat_generation_config
from ..inference.metrics import score_answer, summarize

logger = logging.getLogger(__name__)
#: Metrics logged (with the ``eval_`` prefix) when they can be computed.
LOGGED_METRICS = ("acc@0.5", "mean_iou", "exact_match")


class GenerationEvalDataError(UserError, ValueError):
    """``--eval_data`` has samples that cannot be evaluated (and ``--on_error raise``); one line each."""


class GenerationEval:
    """Generate and score the ``--eval_data`` samples.

    Args:
        samples: the samples to answer.
        tokenizer: the model's tokenizer.
        batch_size: prompts per ``generate`` call.
        max_new_tokens: cap on each answer (None: the model's generation_config).
    """

    def __init__(
        self, samples: list[EvalSample], tokenizer: Any, batch_size: int, max_new_tokens: int | None
    ) -> None:
        self.samples = samples
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens

    def __call__(self, model: Any, rank: int = 0, world_size: int = 1) -> dict[str, float | int]:
        """The metrics of :func:`..inference.metrics.summarize` over all samples (identical on every rank)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        overrides: dict[str, Any] = {"do_sample": False, "chat_format": "chatml"}
        if self.max_new_tokens is not None:
            overrides["max_new_tokens"] = self.max_new_tokens
        # Training renders ChatML whatever the checkpoint was: a base checkpoint's "raw" format does not apply.
        config = chat_generation_config(base, **overrides)
        mine = list(range(rank, len(self.samples), world_size))
        per_rank = -(-len(self.samples) // world_size)
        # Equal work on every rank (a repeated sample, answer dropped): the same number of generate calls in step.
        shard = [self.samples[i] for i in mine] + [self.samples[0]] * (per_rank - len(mine))
        was_training = base.training
        base.eval()
        try:
            answers, _ = generate_answers(
                base, self.tokenizer, shard, config, self.batch_size, synced_gpus=world_size > 1
            )
        finally:
            base.train(was_training)
        local = list(zip(mine, answers[: len(mine)], strict=True))
        if world_size > 1:
            gathered: list[Any] = [None] * world_size
            torch.distributed.all_gather_object(gathered, local)
            local = [pair for part in gathered for pair in part]
        scores = [score_answer(answer or "", self.samples[i].reference) for i, answer in sorted(local)]
        return summarize(scores)


class GenerationEvalMixin:
    """Adds the generation metrics to the Trainer's evaluation (the ``eval_loss`` pass), in the same log entry."""

    generation_eval: GenerationEval | None = None
    #: ``--eval_benchmark``: each returns ``{"<name>_<key>": value}`` (:mod:`.benchmark_eval`).
    benchmark_evals: tuple[Any, ...] = ()

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> Any:
        output = super().evaluation_loop(  # type: ignore[misc]
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
        # evaluate() calls this with "Evaluation", predict() with "Prediction": only evaluations get metrics.
        if self.generation_eval is not None and description == "Evaluation":
            args = self.args  # type: ignore[attr-defined]
            with self.autocast_smart_context_manager():  # type: ignore[attr-defined]
                metrics = self.generation_eval(self.model, args.process_index, args.world_size)  # type: ignore[attr-defined]
            output.metrics.update(
                {f"{metric_key_prefix}_{k}": v for k, v in metrics.items() if k in LOGGED_METRICS}
            )
        if self.benchmark_evals and description == "Evaluation":
            args = self.args  # type: ignore[attr-defined]
            for benchmark in self.benchmark_evals:
                with self.autocast_smart_context_manager():  # type: ignore[attr-defined]
                    metrics = benchmark(self.model, args.process_index, args.world_size)  # type: ignore[attr-defined]
                output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in metrics.items()})
        return output


class EvaluateAtEndCallback(TrainerCallback):
    """Asks for an evaluation after the last training step, so the final model's metrics are logged too."""

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if state.global_step >= state.max_steps:
            control.should_evaluate = True
        return control


def attach_generation_eval(
    trainer: Any, paths: list[str], tokenizer: Any, on_error: str, max_new_tokens: int | None
) -> None:
    """Read ``--eval_data`` and make ``trainer`` compute the generation metrics at each evaluation and at the end.

    Raises:
        GenerationEvalDataError: samples that cannot be evaluated, unless ``on_error == "skip"`` (then counted).
    """
    samples, errors = read_eval_samples(paths)
    if errors and on_error != "skip":
        raise GenerationEvalDataError(
            f"{len(errors)} --eval_data sample(s) cannot be evaluated (--on_error skip leaves them out):\n  "
            + "\n  ".join(errors)
        )
    if errors:
        logger.warning("--eval_data: %d sample(s) skipped: %s", len(errors), "; ".join(errors))
    if not samples:
        raise GenerationEvalDataError(f"--eval_data {' '.join(paths)}: no sample to evaluate")
    trainer.generation_eval = GenerationEval(
        samples, tokenizer, trainer.args.per_device_eval_batch_size, max_new_tokens
    )
    trainer.add_callback(EvaluateAtEndCallback())
