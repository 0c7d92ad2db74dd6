"""``eval --benchmark ... --report DIR``: the page of one benchmark result, from score dictionaries made by
``score_benchmark`` on small generated benchmark files and real tiny pictures: the counts and metrics, the
breakdowns (VQA answer types, MME tasks, grounding IoU) with their charts, the answers lowest score first, the boxes
of grounding drawn at their pixels in two colours, and a missing picture listed while the page is still written.
The browser test is in tests/test_reports_browser.py.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from qwenvl_train.eval_mm.scoring import score_benchmark
from qwenvl_train.format.boxes import to_pixels
from qwenvl_train.reports.benchmark import pixel_box_to_grid, write_benchmark_report
from qwenvl_train.reports.pictures import PREDICTED, REFERENCE

WHITE = (255, 255, 255)
W, H = 200, 100  # the pictures' size: boxes map to pixels by hand


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pictures_in(page: str) -> list[str]:
    return re.findall(r'<img class="picture" src="([^"]+)"', page)


def card_titles(page: str) -> list[str]:
    return re.findall(r"<b>question ([^<]*?)</b>", page)


def decoded(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


def table_rows(page: str, first_cell: str) -> list[list[str]]:
    """The rows of the page's tables whose first cell is ``first_cell``."""
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row) for row in rows]
    return [c for c in cells if c and c[0] == first_cell]


def textvqa_result(root: Path) -> dict[str, Any]:
    """Three TextVQA questions on real pictures (the third's is missing on disk): answers scored 1.0, 0.6, and a
    missing prediction (0.0); answer types number / other / other."""
    Image.new("RGB", (W, H), WHITE).save(root / "img0.png")
    Image.new("RGB", (W, H), (0, 0, 200)).save(root / "img1.png")
    data = write_jsonl(
        root / "textvqa_val.jsonl",
        [
            {"image": f"img{i}.png", "question": f"What is <b>{i}</b>?", "question_id": 100 + i}
            for i in range(3)
        ],
    )
    answers = [["2"] * 10, ["red"] * 2 + ["blue"] * 8, ["yes"] * 10]
    annotations = root / "ann.json"
    annotations.write_text(
        json.dumps(
            {
                "annotations": [
                    {
                        "question_id": 100 + i,
                        "answer_type": "number" if i == 0 else "other",
                        "question_type": "what is",
                        "answers": [{"answer": a, "answer_id": j + 1} for j, a in enumerate(ans)],
                    }
                    for i, ans in enumerate(answers)
                ]
            }
        ),
        encoding="utf-8",
    )
    predictions = [
        {"question_id": 100, "answer": "Two"},
        {"question_id": 101, "answer": "Red."},
        {"question_id": 7, "answer": "x"},
    ]
    return score_benchmark("textvqa_val", data, predictions, annotations=annotations)


def refcoco_result(root: Path, scoring: str = "original") -> dict[str, Any]:
    """Five RefCOCO questions on 200x100 pictures, reference box [20, 20, 100, 80] px: a hit, a miss beside it,
    an answer with no box, a partial answer whose picture is missing, and a box written backwards (a miss in
    original scoring, a hit in official)."""
    Image.new("RGB", (W, H), WHITE).save(root / "white.png")
    Image.new("RGB", (W, H), (0, 0, 0)).save(root / "black.png")
    line = {"sent": "the thing", "bbox": [20, 20, 100, 80], "width": W, "height": H}
    images = ["white.png", "white.png", "black.png", "gone.png", "white.png"]
    data = write_jsonl(root / "refcoco_val.jsonl", [{**line, "image": image} for image in images])
    predictions = [
        {"answer": "<ref>the thing</ref><box>(100,200),(500,800)</box>"},
        {"answer": "<ref>the thing</ref><box>(600,100),(900,900)</box>"},
        {"answer": "on the left"},
        {"answer": "(100,200),(250,800)"},
        {"answer": "(500,800),(100,200)"},
    ]
    return score_benchmark("refcoco_val", data, predictions, scoring=scoring)


def test_vqa_report_metrics_answer_types_and_answers_lowest_first(tmp_path: Path) -> None:
    result = textvqa_result(tmp_path)
    assert [d["score"] for d in result["details"]] == [1.0, pytest.approx(0.6), 0.0]
    path = write_benchmark_report(result, tmp_path / "report", image_root=tmp_path)
    assert path == tmp_path / "report" / "index.html"
    page = path.read_text(encoding="utf-8")
    assert "<title>textvqa_val: original scoring</title>" in page
    assert table_rows(page, "questions") == [["questions", "3"]]
    assert table_rows(page, "questions without a prediction (scored as wrong)")[0][1] == "1"
    assert table_rows(page, "predictions for no question of --data (not used)")[0][1] == "1"
    assert table_rows(page, "vqa_accuracy") == [["vqa_accuracy", "53.3333"]]  # (1 + 0.6 + 0) / 3
    assert "<li>7</li>" in page  # the unknown id, listed
    assert table_rows(page, "number") == [["number", "100.0000"]]
    assert table_rows(page, "other") == [["other", "30.0000"]]
    assert table_rows(page, "what is") == [["what is", "53.3333"]]
    assert 'src="images/breakdown-answer_type.png"' in page
    assert decoded(path.parent / "images" / "breakdown-answer_type.png").size[0] >= 600
    assert "breakdown-question_type.png" not in page  # one question type: its table only
    assert card_titles(page) == ["102", "101", "100"]  # scores 0.0 (missing), 0.6, 1.0
    assert "no prediction for this question: scored as an empty answer" in page
    assert "score 0.600" in page and "score 1.000" in page
    assert "blue (x8) | red (x2)" in page and "2 (x10)" in page  # the ten human answers, counted
    assert "<b>1</b>" not in page and "What is &lt;b&gt;1&lt;/b&gt;?" in page and "Red." in page
    pictures = pictures_in(page)
    assert pictures == ["images/answer-0002.png", "images/answer-0003.png"]  # question 102's is missing
    assert decoded(path.parent / pictures[0]).getpixel((5, 5)) == (0, 0, 200)  # img1: not redrawn
    unread = page.split("Pictures that could not be read (1)")[1]
    assert "question 102: picture img2.png" in unread and "no such file" in unread
    assert not re.search(r"(?:https?:)?//", page)


def test_cards_limit_and_a_second_report_replaces_the_first(tmp_path: Path) -> None:
    result = textvqa_result(tmp_path)
    write_benchmark_report(result, tmp_path / "r", image_root=tmp_path)
    page = write_benchmark_report(result, tmp_path / "r", image_root=tmp_path, cards=1).read_text()
    assert card_titles(page) == ["102"] and "Answers, lowest score first (1 of 3)" in page
    assert sorted(p.name for p in (tmp_path / "r" / "images").glob("answer-*.png")) == []  # 102's is missing


def test_grounding_report_draws_reference_and_prediction_at_their_pixels(tmp_path: Path) -> None:
    result = refcoco_result(tmp_path)
    assert [d["score"] for d in result["details"]] == [1.0, 0.0, 0.0, 0.0, 0.0]
    path = write_benchmark_report(result, tmp_path / "report", image_root=tmp_path)
    page = path.read_text(encoding="utf-8")
    assert table_rows(page, "precision@1") == [["precision@1", "20.0000"]]
    # lowest first: score 0 by IoU (the wrong box, no box, the backwards box: 0; the partial answer), then the hit
    assert card_titles(page) == ["1", "2", "4", "3", "0"]
    assert "no box found in the answer: scored as a zero box" in page
    assert 'class="legend"' in page and f"rgb{REFERENCE}".replace(" ", "") in page.replace(" ", "")
    iou_rows = {row[0]: row[1] for row in (table_rows(page, f"{k / 10:.1f}-{(k + 1) / 10:.1f}")[0]
                                           for k in range(10))}  # fmt: skip
    assert iou_rows["0.0-0.1"] == "3" and iou_rows["0.3-0.4"] == "1" and iou_rows["0.9-1.0"] == "1"
    assert sum(int(v) for v in iou_rows.values()) == 5
    assert "answers without a box (scored as a zero box): 1" in page
    assert decoded(path.parent / "images" / "breakdown-iou.png").size[1] > 300
    assert "question 3: picture gone.png" in page.split("Pictures that could not be read (1)")[1]

    pictures = pictures_in(page)
    assert pictures == [f"images/answer-{n:04d}.png" for n in (1, 2, 3, 5)]  # card 4 (question 3): no picture
    # question 1: the reference at [20, 20, 100, 80] px and the prediction (600,100),(900,900) of 999, which is
    # [120.12, 10.01, 180.18, 90.09] px, drawn at (120, 10)-(180, 90)
    assert to_pixels(pixel_box_to_grid([20, 20, 100, 80], W, H), W, H) == [(20, 20), (100, 80)]
    predicted = result["details"][1]["box"]
    assert predicted == pytest.approx([120.12012, 10.01001, 180.18018, 90.09009], abs=1e-4)
    assert to_pixels(pixel_box_to_grid(predicted, W, H), W, H) == [(120, 10), (180, 90)]
    miss = decoded(path.parent / pictures[0])
    assert miss.size == (W, H)
    assert miss.getpixel((20, 50)) == REFERENCE and miss.getpixel((100, 50)) == REFERENCE
    assert miss.getpixel((60, 20)) == REFERENCE and miss.getpixel((60, 80)) == REFERENCE
    assert miss.getpixel((120, 50)) == PREDICTED and miss.getpixel((180, 50)) == PREDICTED
    assert miss.getpixel((150, 10)) == PREDICTED and miss.getpixel((150, 90)) == PREDICTED
    assert miss.getpixel((60, 50)) == WHITE and miss.getpixel((150, 50)) == WHITE
    assert miss.getpixel((110, 50)) == WHITE and miss.getpixel((10, 50)) == WHITE
    no_box = decoded(path.parent / pictures[1])  # black picture: the reference only
    assert no_box.getpixel((20, 50)) == REFERENCE and PREDICTED not in {c for _, c in no_box.getcolors()}
    backwards = decoded(path.parent / pictures[2])  # (500,800),(100,200): drawn with its corners sorted
    assert backwards.getpixel((20, 50)) == PREDICTED and backwards.getpixel((100, 50)) == PREDICTED  # over it
    assert backwards.getpixel((60, 50)) == WHITE and backwards.getpixel((10, 50)) == WHITE
    assert "predicted box [100.1, 80.1, 20.0, 20.0] px" in page and "[20.0, 20.0, 100.0, 80.0] px" in page


def test_grounding_official_scoring_is_named_and_counts_the_backwards_box(tmp_path: Path) -> None:
    page = write_benchmark_report(refcoco_result(tmp_path, "official"), tmp_path / "r", image_root=tmp_path)
    text = page.read_text(encoding="utf-8")
    assert "<title>refcoco_val: official scoring</title>" in text
    assert table_rows(text, "precision@1") == [["precision@1", "40.0000"]]  # the backwards box is a hit
    assert card_titles(text)[-2:] == ["0", "4"]


def test_mme_report_tasks_table_and_pictures_under_images_task(tmp_path: Path) -> None:
    data = tmp_path / "Your_Results"
    data.mkdir()
    (data / "existence.txt").write_text(
        "1.png\tIs there a dog?\tYes\n1.png\tIs there a cat?\tNo\n2.png\tIs it red?\tYes\n2.png\tIs it blue?\tNo\n"
    )
    (tmp_path / "images" / "existence").mkdir(parents=True)
    for name in ("1.png", "2.png"):
        Image.new("RGB", (W, H), WHITE).save(tmp_path / "images" / "existence" / name)
    answers = ["Yes", "Yes", "Yes, it is", "Not really"]
    result = score_benchmark(
        "mme", data, [{"question_id": f"existence/{i}", "answer": a} for i, a in enumerate(answers)]
    )
    page = write_benchmark_report(result, tmp_path / "r", image_root=tmp_path).read_text(encoding="utf-8")
    # existence: acc 3/4 = 75, acc+ 1/2 (picture 2 both right) = 50 -> 125
    assert table_rows(page, "existence") == [
        ["existence", "125.0000"],  # the metrics table
        ["existence", "75.0000", "50.0000", "125.0000"],  # the tasks table
    ]
    assert table_rows(page, "perception") == [["perception", "125.0000"]]
    assert "perception: summed without 9 task(s) absent" in page and "cognition: summed without 4" in page
    assert 'src="images/breakdown-tasks.png"' in page
    assert card_titles(page)[0] == "existence/1.png/Is there a cat? (existence)"
    assert "read as: yes" in page
    assert len(pictures_in(page)) == 4 and "could not be read" not in page


def test_server_split_has_no_metric_and_still_writes(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "testdev.jsonl", [{"image": "i.png", "question": "q", "question_id": 5}])
    result = score_benchmark("vqav2_testdev", data, [{"question_id": 5, "answer": "yes"}])
    page = write_benchmark_report(result, tmp_path / "r").read_text(encoding="utf-8")
    assert "no metric: nothing was scored locally" in page
    assert card_titles(page) == ["5"] and "picture i.png" in page  # relative to the current directory


def test_an_unwritable_folder_is_one_report_error(tmp_path: Path) -> None:
    from qwenvl_train.reports.page import ReportError

    (tmp_path / "taken").write_text("a file", encoding="utf-8")
    with pytest.raises(ReportError, match=r"eval --benchmark --report .*taken: cannot write the report"):
        write_benchmark_report(textvqa_result(tmp_path), tmp_path / "taken")


def test_the_command_writes_the_report_of_its_result(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from qwenvl_train.commands.eval import benchmark_report

    result = refcoco_result(tmp_path)
    args = argparse.Namespace(report=str(tmp_path / "r"), report_samples=2, image_root=str(tmp_path))
    benchmark_report(args, result)
    assert f"report: {tmp_path / 'r' / 'index.html'}" in capsys.readouterr().err
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert card_titles(page) == ["1", "2"] and len(pictures_in(page)) == 2
    benchmark_report(argparse.Namespace(report=None, report_samples=2, image_root=None), result)
    assert capsys.readouterr().err == ""


def test_a_server_split_result_of_the_runner_shows_its_note(tmp_path: Path) -> None:
    """``run_benchmark`` returns a server split's result without details, with a note saying where to submit."""
    result = {"benchmark": "docvqa_test", "num_questions": 2, "metrics": {}, "note": "submit them <there>"}
    page = write_benchmark_report(result, tmp_path / "r").read_text(encoding="utf-8")
    assert "<p>submit them &lt;there&gt;</p>" in page and table_rows(page, "questions") == [
        ["questions", "2"]
    ]
    assert "Answers, lowest score first (0 of 0)" in page and card_titles(page) == []


def test_a_report_folder_that_cannot_be_one_stops_the_command_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from qwenvl_train.cli import main

    textvqa_result(tmp_path)  # writes the benchmark's files
    (tmp_path / "taken").write_text("a file", encoding="utf-8")
    (tmp_path / "p.json").write_text(json.dumps([{"question_id": 100, "answer": "2"}]), encoding="utf-8")
    argv = ["eval", "--benchmark", "textvqa_val", "--data", str(tmp_path / "textvqa_val.jsonl"),
            "--annotations", str(tmp_path / "ann.json"), "--predictions", str(tmp_path / "p.json"),
            "--out", str(tmp_path / "m.json")]  # fmt: skip
    assert main([*argv, "--report", str(tmp_path / "taken")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--report" in err[0] and "taken" in err[0]
    assert not (tmp_path / "m.json").exists()  # stopped before scoring
    assert main([*argv, "--report", str(tmp_path / "r"), "--image-root", str(tmp_path)]) == 0
    assert f"report: {tmp_path / 'r' / 'index.html'}" in capsys.readouterr().err
    assert card_titles((tmp_path / "r" / "index.html").read_text()) == ["101", "102", "100"]
