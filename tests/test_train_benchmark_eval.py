"""``qwenvl-train train --eval_benchmark NAME=FILE``: a benchmark's metric at each evaluation, logged like the loss."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from eval_mm_fixtures import vqa_file
from qwenvl_train.errors import ConfigurationError
from qwenvl_train.eval_mm.catalog import UnknownBenchmarkError
from qwenvl_train.training import train
from qwenvl_train.training.arguments import parse_args
from qwenvl_train.training.benchmark_eval import BenchmarkSpec, parse_benchmark_spec
from train_fixtures import cpu_args, write_dataset


def test_values_name_a_benchmark_and_its_files() -> None:
    assert parse_benchmark_spec("ocrvqa_val=a/b.jsonl") == BenchmarkSpec("ocrvqa_val", Path("a/b.jsonl"))
    assert parse_benchmark_spec("textvqa_val=t.jsonl,questions=q.json,annotations=a.json") == BenchmarkSpec(
        "textvqa_val", Path("t.jsonl"), Path("q.json"), Path("a.json")
    )
    with pytest.raises(ConfigurationError, match="expected NAME=FILE"):
        parse_benchmark_spec("textvqa_val")
    with pytest.raises(ConfigurationError, match="only questions=FILE and annotations=FILE, got 'gold=x'"):
        parse_benchmark_spec("textvqa_val=t.jsonl,gold=x")
    with pytest.raises(ConfigurationError, match="official server only"):
        parse_benchmark_spec("vqav2_testdev=t.jsonl")
    with pytest.raises(UnknownBenchmarkError, match="unknown benchmark 'textvqa'"):
        parse_benchmark_spec("textvqa=t.jsonl")


def test_the_option_is_repeatable(tmp_path: Path) -> None:
    args = parse_args(
        ["--output_dir", str(tmp_path), "--eval_benchmark", "a=1", "b=2", "--eval_benchmark", "c=3"]
    )
    assert args.data.eval_benchmark == ["a=1", "b=2", "c=3"]


def test_metric_logged_at_each_evaluation_as_eval_name_key(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = vqa_file(tmp_path, 5)
    monkeypatch.chdir(tmp_path)  # the pictures are relative to the current directory, as for the command
    seen: list[list] = []

    def score_benchmark(
        name, data_path, predictions, *, questions=None, annotations=None, scoring="original"
    ):
        seen.append([r["questionId"] for r in predictions])
        answered = len({r["questionId"] for r in predictions})
        return {"benchmark": name, "metrics": {"accuracy": 100.0 * answered / 5, "other": 1.5}}

    monkeypatch.setitem(
        sys.modules, "qwenvl_train.eval_mm.scoring", SimpleNamespace(score_benchmark=score_benchmark)
    )
    train_file = write_dataset(tmp_path, n_samples=4, text_only=False)
    out = tmp_path / "out"
    train(cpu_args(tiny_model_dir, train_file, out, "--tune", "lora", "--max_steps", "3",
                   "--eval_data_path", str(train_file), "--eval_strategy", "steps", "--eval_steps", "2",
                   "--per_device_eval_batch_size", "2", "--eval_benchmark", f"ocrvqa_val={data}"))  # fmt: skip
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    entries = [entry for entry in history if "eval_loss" in entry]
    assert [entry["step"] for entry in entries] == [2, 3]
    for entry in entries:
        assert (entry["eval_ocrvqa_val_accuracy"], entry["eval_ocrvqa_val_other"]) == (100.0, 1.5)
    assert seen == [[1000, 1001, 1002, 1003, 1004]] * 2  # every question once, in order


def test_without_an_evaluation_dataset_it_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = vqa_file(tmp_path, 2)
    train_file = write_dataset(tmp_path, n_samples=2, text_only=True)
    with pytest.raises(ConfigurationError, match="--eval_benchmark needs --eval_data or --eval_data_path"):
        train(cpu_args(tiny_model_dir, train_file, tmp_path / "out", "--max_steps", "1",
                       "--eval_benchmark", f"ocrvqa_val={data}"))  # fmt: skip
