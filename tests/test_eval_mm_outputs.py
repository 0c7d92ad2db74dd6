"""``eval --benchmark``'s writers through :mod:`qwenvl_train.outputs` (issue #24): ``--out`` and
``--save-predictions`` on a FIFO, a symlink to ``/dev/null`` and a target that is neither; ``--compare --out``
likewise. A stream is written through and never read back, so ``--resume`` from one is one line."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from eval_mm_fixtures import vqa_file
from qwenvl_train.cli import main
from test_outputs import assert_null_link_intact, draining, null_link, unix_socket


def saved_answers(tmp_path: Path, data: Path) -> Path:
    """Predictions for the questions of ``data``, as the original writes OCR-VQA's (``questionId``)."""
    lines = [json.loads(line) for line in data.read_text().splitlines()]
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text("".join(json.dumps({"questionId": q["question_id"], "answer": q["answer"]}) + "\n"
                                   for q in lines))  # fmt: skip
    return predictions


def score_args(data: Path, predictions: Path, out: object) -> list[str]:
    return ["eval", "--benchmark", "ocrvqa_val", "--data", str(data), "--predictions", str(predictions),
            "--out", str(out)]  # fmt: skip


def test_out_streams_into_a_fifo_and_a_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = vqa_file(tmp_path, 3)
    predictions = saved_answers(tmp_path, data)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with draining(fifo) as got:
        assert main(score_args(data, predictions, fifo)) == 0
    metrics = json.loads(got[0])
    assert (metrics["benchmark"], metrics["metrics"]["accuracy"]) == ("ocrvqa_val", 100.0)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    link = null_link(tmp_path)
    assert main(score_args(data, predictions, link)) == 0
    assert_null_link_intact(link)


def test_out_on_stdout_moves_the_table_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = vqa_file(tmp_path, 2)
    assert main(score_args(data, saved_answers(tmp_path, data), "-")) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_questions"] == 2
    assert captured.err.splitlines()[0] == "ocrvqa_val (original scoring): 2 question(s), 0 missing"


@pytest.mark.parametrize("kind", ["socket", "directory"])
def test_out_and_save_predictions_refuse_any_other_target_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    data = vqa_file(tmp_path, 2)
    with unix_socket(tmp_path / "sock") as sock:
        target = sock if kind == "socket" else tmp_path
        for option in ("--out", "--save-predictions"):
            args = ["eval", "--benchmark", "ocrvqa_val", "--data", str(data), "--model", str(tmp_path / "none"),
                    option, str(target)]  # fmt: skip
            assert main(args) == 1
            err = capsys.readouterr().err
            assert (
                err
                == f"error: {option} {target} is a {kind}, not a file: give a file to write (nothing was written)\n"
            )


def test_save_predictions_streams_into_a_fifo_and_refuses_resume_from_one(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = vqa_file(tmp_path, 3)
    fifo, out = tmp_path / "pipe", tmp_path / "m.json"
    os.mkfifo(fifo)
    base = ["eval", "--benchmark", "ocrvqa_val", "--data", str(data), "--model", str(tiny_model_dir),
            "--image-root", str(tmp_path), "--save-predictions", str(fifo), "--device", "cpu", "--dtype", "fp32"]  # fmt: skip
    with draining(fifo) as got:
        assert main([*base, "--out", str(out), "--batch-size", "2"]) == 0
    streamed = [json.loads(line) for line in got[0].decode().splitlines()]
    assert [r["questionId"] for r in streamed] == [1000, 1001, 1002]
    assert json.loads(out.read_text())["num_missing"] == 0  # scored from the answers in memory
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    capsys.readouterr()
    assert main([*base, "--resume"]) == 1
    assert "--resume reads the saved answers back, a stream cannot be: give a file" in capsys.readouterr().err


def test_compare_out_streams_into_a_fifo(tmp_path: Path) -> None:
    data = vqa_file(tmp_path, 2)
    metrics = tmp_path / "m.json"
    assert main(score_args(data, saved_answers(tmp_path, data), metrics)) == 0
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with draining(fifo) as got:
        assert main(["eval", "--compare", str(metrics), "--out", str(fifo)]) == 0
    assert b"ocrvqa_val" in got[0]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
