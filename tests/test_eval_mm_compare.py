"""eval --compare's library: metrics files of several models -> one markdown table (differences to the base,
the paper's figures beside) and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwenvl_train.eval_mm.compare import CompareError, compare, compare_rows, load_run
from qwenvl_train.eval_mm.paper import PAPER_FIGURES, paper_figure


def metrics(benchmark: str, values: dict[str, float], scoring: str = "original") -> dict:
    return {
        "benchmark": benchmark,
        "scoring": scoring,
        "num_questions": 3,
        "num_missing": 0,
        "metrics": values,
    }


def test_table_and_chart(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "textvqa.json").write_text(json.dumps(metrics("textvqa_val", {"vqa_accuracy": 61.5})))
    (base / "refcoco.json").write_text(
        json.dumps(metrics("refcoco_val", {"precision@1": 88.0, "mean_iou": 70.0}))
    )
    tuned = tmp_path / "tuned.json"
    tuned.write_text(
        json.dumps(
            [
                metrics("refcoco_val", {"precision@1": 90.25, "mean_iou": 72.0}),
                metrics("textvqa_val", {"vqa_accuracy": 60.0}),
                metrics("mme", {"perception": 1400.0, "cognition": 300.5, "OCR": 140.0}),
            ]
        )
    )
    table_out, chart_out = tmp_path / "t.md", tmp_path / "c.png"
    table = compare([base, tuned], table_out=table_out, chart_out=chart_out)
    lines = table.splitlines()
    assert lines[0] == (
        "| Benchmark | Metric | base | tuned | Δ tuned | Qwen-VL (paper) | Qwen-VL-Chat (paper) |"
    )
    # catalog order: textvqa before refcoco before mme; headline metrics only (plus MME's cognition)
    assert lines[2] == "| textvqa_val | vqa_accuracy | 61.50 | 60.00 | -1.50 | 63.80 | – |"
    assert lines[3] == "| refcoco_val | precision@1 | 88.00 | 90.25 | +2.25 | 89.36 | 88.55 |"
    assert lines[4] == "| mme | perception | – | 1400.00 | – | – | 1487.58 |"
    assert lines[5] == "| mme | cognition | – | 300.50 | – | – | 360.71 |"
    assert "Scoring: original" in table
    assert table_out.read_text() == table
    assert chart_out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_notes_for_published_splits_and_same_stem_labels(tmp_path: Path) -> None:
    for name, value in (("a", 70.0), ("b", 71.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(
            json.dumps(metrics("docvqa_val", {"anls": value}, "official"))
        )
    table = compare([tmp_path / "a" / "metrics.json", tmp_path / "b" / "metrics.json"])
    assert "| docvqa_val [1] | anls | 70.00 | 71.00 | +1.00 | 65.10 | – |" in table
    assert "[1] docvqa_val: the paper's figure was published on DocVQA test." in table
    assert "a/metrics" in table.splitlines()[0] and "Scoring: official" in table


def test_bad_metrics_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"metrics": {}}')
    with pytest.raises(CompareError, match="bad.json: not a metrics file"):
        load_run(bad)
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps([metrics("flickr", {"CIDEr": 1.0})] * 2))
    with pytest.raises(CompareError, match="appears twice"):
        load_run(twice)


def test_rows_and_paper_figures() -> None:
    assert paper_figure("vqav2_val", "vqa_accuracy").qwen_vl == 78.8
    assert paper_figure("mme", "perception").qwen_vl_chat == pytest.approx(1487.576330532213)
    assert paper_figure("textvqa_val", "vqa_accuracy").qwen_vl_chat is None
    assert len(PAPER_FIGURES) == 24
    assert compare_rows([]) == []


def test_eval_compare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qwenvl_train.cli import main

    a, b = tmp_path / "base.json", tmp_path / "tuned.json"
    a.write_text(json.dumps(metrics("ocrvqa_test", {"accuracy": 70.0})))
    b.write_text(json.dumps(metrics("ocrvqa_test", {"accuracy": 72.5})))
    table, chart = tmp_path / "table.md", tmp_path / "chart.png"
    assert main(["eval", "--compare", str(a), str(b), "--out", str(table), "--chart", str(chart)]) == 0
    printed = capsys.readouterr().out
    assert "| ocrvqa_test | accuracy | 70.00 | 72.50 | +2.50 | 75.70 | – |" in printed
    assert table.read_text() == printed and chart.stat().st_size > 0
    assert main(["eval", "--compare", str(a), "--model", "m"]) == 1
    assert "loads no model" in capsys.readouterr().err
    assert main(["eval", "--compare", str(tmp_path / "nope.json")]) == 1
    assert "nope.json: cannot read" in capsys.readouterr().err
