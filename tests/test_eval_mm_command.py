"""``qwenvl-train eval --benchmark``: the command line of issue #26 on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval_mm_fixtures import vqa_file
from qwenvl_train.cli import main
from qwenvl_train.commands.eval import benchmark_table


def test_generate_score_print_and_write_then_score_the_saved_answers(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = vqa_file(tmp_path, 4)
    out, saved = tmp_path / "m.json", tmp_path / "preds.jsonl"
    code = main(["eval", "--benchmark", "ocrvqa_val", "--data", str(data), "--model", str(tiny_model_dir),
                 "--image-root", str(tmp_path), "--save-predictions", str(saved), "--out", str(out),
                 "--batch-size", "3", "--device", "cpu", "--dtype", "fp32"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert (result["benchmark"], result["num_questions"], result["num_missing"]) == ("ocrvqa_val", 4, 0)
    assert printed.splitlines()[0] == "ocrvqa_val (original scoring): 4 question(s), 0 missing"
    assert printed.splitlines()[2].split() == ["accuracy", f"{result['metrics']['accuracy']:.2f}"]
    assert [json.loads(line)["questionId"] for line in saved.read_text().splitlines()] == [
        1000,
        1001,
        1002,
        1003,
    ]

    again = tmp_path / "again.json"
    assert main(["eval", "--benchmark", "ocrvqa_val", "--data", str(data), "--predictions", str(saved),
                 "--out", str(again), "--scoring", "official"]) == 0  # fmt: skip
    assert json.loads(again.read_text())["metrics"] == result["metrics"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--benchmark", "ocrvqa_val", "--model", "m"], "--benchmark needs --data FILE"),
        (["--benchmark", "textvqa", "--data", "d.jsonl", "--model", "m"], "unknown benchmark 'textvqa'"),
        (["--benchmark", "seed_bench_video", "--data", "d.jsonl", "--model", "m"], "Qwen-VL takes pictures"),
        (["--data", "d.json", "--model", "m", "--questions", "q.json"], "--questions: only with --benchmark NAME"),
        (["--benchmark", "gqa_testdev", "--data", "d.jsonl", "--model", "m", "--max-new-tokens", "5"],
         "--max-new-tokens: --benchmark decodes with the original script's settings"),
        (["--benchmark", "gqa_testdev", "--data", "d.jsonl"], "pass either --predictions FILE or --model DIR"),
        (["--benchmark", "gqa_testdev", "--data", "d.jsonl", "--predictions", "p", "--model", "m"],
         "pass either --predictions FILE or --model DIR"),
        (["--benchmark", "gqa_testdev", "--data", "d.jsonl", "--model", "m", "--resume"], "--resume needs"),
    ],
)  # fmt: skip
def test_wrong_options_are_one_line_and_status_1(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_table_of_a_server_split_and_of_mme() -> None:
    server = {"benchmark": "vqav2_testdev", "num_questions": 3, "num_missing": 0, "metrics": {}}
    assert benchmark_table(server).splitlines() == [
        "vqav2_testdev (original scoring): 3 question(s), 0 missing",
        "no local score: submit the predictions to the benchmark's evaluation server",
    ]
    mme = {"benchmark": "mme", "num_questions": 8, "num_missing": 1, "num_skipped": 2, "scoring": "official",
           "metrics": {"perception": 1487.576, "cognition": 360.7}}  # fmt: skip
    assert benchmark_table(mme).splitlines() == [
        "mme (official scoring): 8 question(s), 1 missing, 2 skipped",
        "metric          value",
        "perception    1487.58",
        "cognition      360.70",
    ]


def test_help_names_the_benchmark_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    for option in ("--benchmark", "--questions", "--annotations", "--image-root", "--predictions",
                   "--save-predictions", "--resume", "--scoring"):  # fmt: skip
        assert option in text
