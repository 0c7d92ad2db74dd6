"""``--eval_benchmark NAME=FILE``: a benchmark's metric at every evaluation of a training run, logged like the loss.

    qwenvl-train train ... --eval_data_path data/val.json --eval_strategy steps --eval_steps 500 \\
        --eval_benchmark textvqa_val=eval_mm/textvqa_val.jsonl --metric_for_best_model textvqa_val_vqa_accuracy

At each evaluation (and once more at the end) the model answers the benchmark's questions exactly as
``qwenvl-train eval --benchmark`` does (:mod:`qwenvl_train.eval_mm`: the original prompts and decoding) and the
answers are scored by the original metric code; every metric of the benchmark joins ``eval_loss`` in the same log
entry as ``eval_<name>_<key>`` (``eval_textvqa_val_vqa_accuracy``), so it reaches the console,
``trainer_state.json`` and wandb, and can be ``--metric_for_best_model`` (without the ``eval_`` prefix, as the
Trainer takes it). Relative picture paths resolve against the current directory, as for the command. Benchmarks
whose metric needs more than ``FILE`` (the VQA score's official questions/annotations, DocVQA's ``val_v1.0.json``)
take them from ``NAME=FILE,questions=Q.json,annotations=A.json``.

Under torchrun the questions are split over the ranks (contiguous shards padded to equal length, the padding's
answers dropped) and every rank runs the same number of steps in step (``synced_gpus``), which ZeRO-3 and FSDP
need; the answers are gathered and every rank scores them, so each holds the same metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkSpec:
    """One ``--eval_benchmark`` value: ``NAME=FILE[,questions=Q.json][,annotations=A.json]``."""

    name: str
    data: Path
    questions: Path | None = None
    annotations: Path | None = None


def parse_benchmark_spec(text: str) -> BenchmarkSpec:
    """Read one ``--eval_benchmark`` value.

    Raises:
        ConfigurationError: not ``NAME=FILE``, an unknown benchmark or extra key, or a server-only split.
    """
    from ..eval_mm.catalog import get_benchmark

    head, *extras = text.split(",")
    name, sep, data = head.partition("=")
    if not sep or not name or not data:
        raise ConfigurationError(
            f"--eval_benchmark {text!r}: expected NAME=FILE (e.g. textvqa_val=textvqa_val.jsonl)"
        )
    bench = get_benchmark(name)
    if bench.metric is None:
        raise ConfigurationError(
            f"--eval_benchmark {name}: scored by its official server only, no local metric"
        )
    files: dict[str, Path] = {}
    for extra in extras:
        key, sep, value = extra.partition("=")
        if key not in ("questions", "annotations") or not sep or not value:
            raise ConfigurationError(
                f"--eval_benchmark {text!r}: after NAME=FILE only questions=FILE and annotations=FILE, got {extra!r}"
            )
        files[key] = Path(value)
    return BenchmarkSpec(name, Path(data), files.get("questions"), files.get("annotations"))


class BenchmarkEval:
    """Generate and score one benchmark on the model being trained.

    Args:
        spec: the benchmark and its files.
        tokenizer: the model's tokenizer.
        batch_size: questions per batch.
        on_error: ``stop`` or ``skip`` for questions that cannot be asked (read at start).
    """

    def __init__(self, spec: BenchmarkSpec, tokenizer: Any, batch_size: int, on_error: str = "stop") -> None:
        from ..eval_mm.catalog import get_benchmark
        from ..eval_mm.questions import read_questions

        self.spec = spec
        self.bench = get_benchmark(spec.name)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.questions, skipped = read_questions(
            self.bench, spec.data, None, "skip" if on_error == "skip" else "stop"
        )
        if skipped:
            logger.warning(
                "--eval_benchmark %s: %d question(s) left out: %s",
                spec.name,
                len(skipped),
                "; ".join(skipped),
            )
        if not self.questions:
            raise ConfigurationError(f"--eval_benchmark {spec.name}={spec.data}: no question to ask")

    def __call__(self, model: Any, rank: int = 0, world_size: int = 1) -> dict[str, float]:
        """``{"<name>_<key>": value}`` for every metric of the benchmark (identical on every rank)."""
        import torch

        from ..eval_mm.runner import generate_predictions
        from ..eval_mm.scoring import score_benchmark
        from ..eval_mm.sharding import gather_to_all, shard

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        mine = [self.questions[i] for i in shard(len(self.questions), world_size, rank)]
        per_rank = -(-len(self.questions) // world_size)
        # Equal work on every rank (the first question again, its answer dropped): generate calls stay in step.
        padded = mine + [self.questions[0]] * (per_rank - len(mine))
        was_training = base.training
        base.eval()
        try:
            with torch.no_grad():
                records, _ = generate_predictions(
                    base, self.tokenizer, self.bench, padded, batch_size=self.batch_size,
                    synced_gpus=world_size > 1 or None,
                )  # fmt: skip
        finally:
            base.train(was_training)
        gathered = gather_to_all(records[: len(mine)], world_size)
        predictions = [record for part in gathered for record in part]
        result = score_benchmark(
            self.bench.name,
            self.spec.data,
            predictions,
            questions=self.spec.questions,
            annotations=self.spec.annotations,
        )
        return {f"{self.bench.name}_{key}": float(value) for key, value in result["metrics"].items()}


def attach_benchmark_evals(trainer: Any, values: list[str], tokenizer: Any, on_error: str) -> None:
    """Read every ``--eval_benchmark`` and make ``trainer`` score them at each evaluation and at the end.

    Raises:
        ConfigurationError: a bad value, or no evaluation dataset (the evaluation that carries the metrics).
        QuestionError: a question that cannot be asked (unless ``on_error == "skip"``).
    """
    from .generation_eval import EvaluateAtEndCallback

    if trainer.eval_dataset is None:
        raise ConfigurationError(
            "--eval_benchmark needs --eval_data or --eval_data_path: its metrics join that evaluation's eval_loss"
        )
    batch_size = trainer.args.per_device_eval_batch_size
    policy = "skip" if on_error == "skip" else "stop"
    trainer.benchmark_evals = tuple(
        BenchmarkEval(parse_benchmark_spec(value), tokenizer, batch_size, policy) for value in values
    )
    if not any(isinstance(cb, EvaluateAtEndCallback) for cb in trainer.callback_handler.callbacks):
        trainer.add_callback(EvaluateAtEndCallback())
