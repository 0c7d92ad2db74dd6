"""score_benchmark end to end on small files of each family: gold reading, prediction matching (ids, positions,
JSON list or JSON Lines), missing and unknown answers, the errors that name file:line, and the server files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from qwenvl_train.errors import UserError
from qwenvl_train.eval_mm.gold import GoldError, mme_question_id
from qwenvl_train.eval_mm.predictions import PredictionsError
from qwenvl_train.eval_mm.scoring import ScoringError, predictions_for_server, score_benchmark


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.fixture
def vqa_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    data = write_jsonl(
        tmp_path / "textvqa_val.jsonl",
        [{"image": f"img{i}.jpg", "question": f"q{i}?", "question_id": 100 + i} for i in range(3)],
    )
    answers = [["2"] * 10, ["red"] * 2 + ["blue"] * 8, ["yes"] * 10]
    annotations = write_json(
        tmp_path / "ann.json",
        {
            "annotations": [
                {
                    "question_id": 100 + i,
                    "image_id": i,
                    "answer_type": "number" if i == 0 else "other",
                    "question_type": "what",
                    "answers": [{"answer": a, "answer_id": j + 1} for j, a in enumerate(ans)],
                }
                for i, ans in enumerate(answers)
            ]
        },
    )
    questions = write_json(
        tmp_path / "q.json", {"questions": [{"question_id": 100 + i, "question": f"Q{i}?"} for i in range(3)]}
    )
    return data, annotations, questions


def test_vqa_family_with_breakdown_missing_and_unknown(
    vqa_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, annotations, questions = vqa_files
    preds = write_json(
        tmp_path / "p.json",
        [
            {"question_id": 100, "answer": "Two"},
            {"question_id": 101, "answer": "red"},
            {"question_id": 7, "answer": "x"},
        ],
    )
    out = score_benchmark("textvqa_val", data, preds, annotations=annotations, questions=questions)
    # scores 1.0 ("Two" -> "2"), 0.6 (2 of 10 said red), 0.0 (missing -> empty answer)
    assert out["metrics"] == {"vqa_accuracy": pytest.approx(100 * 1.6 / 3)}
    assert (out["num_questions"], out["num_missing"], out["num_unknown"], out["unknown_ids"]) == (
        3,
        1,
        1,
        ["7"],
    )
    assert out["breakdown"]["answer_type"] == {"number": 100.0, "other": pytest.approx(30.0)}
    assert out["breakdown"]["question_type"] == {"what": pytest.approx(100 * 1.6 / 3)}
    assert [d["score"] for d in out["details"]] == [1.0, pytest.approx(0.6), 0.0]
    assert out["details"][2]["missing"] is True and out["details"][2]["prediction"] is None
    assert out["details"][0]["references"] == ["2"] * 10 and out["details"][0]["image"] == "img0.jpg"


def test_json_list_and_json_lines_give_the_same_result(
    vqa_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, annotations, _ = vqa_files
    rows = [{"question_id": 100 + i, "answer": a} for i, a in enumerate(["2", "red", "yes"])]
    as_list = score_benchmark(
        "textvqa_val", data, write_json(tmp_path / "a.json", rows), annotations=annotations
    )
    as_lines = score_benchmark(
        "textvqa_val", data, write_jsonl(tmp_path / "a.jsonl", rows), annotations=annotations
    )
    in_memory = score_benchmark("textvqa_val", data, rows, annotations=annotations)
    assert as_list == as_lines
    assert as_list["metrics"] == in_memory["metrics"]
    assert as_list["metrics"]["vqa_accuracy"] == pytest.approx(100 * 2.6 / 3)  # 1 + 0.6 + 1


def test_official_scoring_differs_where_it_should(vqa_files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, annotations, _ = vqa_files
    rows = [{"question_id": 102, "answer": "Yes."}]
    original = score_benchmark("textvqa_val", data, rows, annotations=annotations)
    official = score_benchmark("textvqa_val", data, rows, annotations=annotations, scoring="official")
    assert original["details"][2]["score"] == 1.0  # "Yes." -> "yes" against ten "yes"
    assert (original["scoring"], official["scoring"]) == ("original", "official")
    with pytest.raises(UserError, match="unknown scoring"):
        score_benchmark("textvqa_val", data, rows, annotations=annotations, scoring="strict")


def test_annotations_that_do_not_match_data(vqa_files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, _, questions = vqa_files
    other = write_json(
        tmp_path / "other.json", {"annotations": [{"question_id": 100, "answers": [{"answer": "a"}]}]}
    )
    with pytest.raises(
        GoldError, match=r"other.json: no annotation for question_id 101 \(.*textvqa_val.jsonl:2\)"
    ):
        score_benchmark("textvqa_val", data, [], annotations=other)
    with pytest.raises(GoldError, match="pass --annotations"):
        score_benchmark("textvqa_val", data, [])


def test_malformed_lines_name_file_and_line(vqa_files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, annotations, _ = vqa_files
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 100, "answer": "a"}\n{"question_id": 101, "answer": \n')
    with pytest.raises(PredictionsError, match=r"bad.jsonl:2: not a JSON object"):
        score_benchmark("textvqa_val", data, bad, annotations=annotations)
    no_text = write_jsonl(tmp_path / "nt.jsonl", [{"question_id": 100, "text": "a"}])
    with pytest.raises(PredictionsError, match=r"nt.jsonl:1: no 'answer' or 'prediction'"):
        score_benchmark("textvqa_val", data, no_text, annotations=annotations)
    twice = write_jsonl(
        tmp_path / "tw.jsonl", [{"question_id": 100, "answer": "a"}, {"question_id": 100, "answer": "b"}]
    )
    with pytest.raises(PredictionsError, match=r"tw.jsonl:2: question 100 already answered at .*tw.jsonl:1"):
        score_benchmark("textvqa_val", data, twice, annotations=annotations)
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(PredictionsError, match=r"bin.jsonl: cannot read the predictions: 'utf-8' codec"):
        score_benchmark("textvqa_val", data, binary, annotations=annotations)
    with pytest.raises(GoldError, match=r"bin.jsonl: cannot read --data"):
        score_benchmark("ocrvqa_val", binary, [])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question_id": 1, "answer": "2"}\n\n{"question_id": 2}\n')
    with pytest.raises(GoldError, match=r"broken.jsonl:2: empty line"):
        score_benchmark("chartqa_test_human", broken, [])
    no_id = write_jsonl(tmp_path / "noid.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(GoldError, match=r"noid.jsonl:1: no 'question_id'"):
        score_benchmark("ocrvqa_val", no_id, [])


def test_chartqa_by_position_with_a_list_gold(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "test_human.jsonl",
        [{"image": "c.png", "question": "q", "answer": a} for a in ("95.1", "12%", "1,234", ["x", "7"])],
    )
    # No id in the objects: matched by position, as the original writes ChartQA results.
    preds = [{"answer": "100"}, {"answer": "0.12"}, {"answer": "1234"}, {"answer": " 7 "}]
    out = score_benchmark("chartqa_test_human", data, preds)
    assert [d["score"] for d in out["details"]] == [1.0, 1.0, 0.0, 1.0]
    assert out["metrics"] == {"relaxed_accuracy": 75.0}
    official = score_benchmark("chartqa_test_human", data, preds, scoring="official")
    assert official["metrics"] == {"relaxed_accuracy": 50.0}  # 4.9 is 5.15 % of 95.1
    # Fewer answers than questions: the tail is missing; more: the extra ones are unknown.
    short = score_benchmark("chartqa_test_human", data, preds[:2])
    assert (short["num_missing"], short["metrics"]["relaxed_accuracy"]) == (2, 50.0)
    long = score_benchmark("chartqa_test_human", data, [*preds, {"answer": "z"}])
    assert (long["num_unknown"], long["unknown_ids"]) == (1, ["#4"])


def test_gqa_ocrvqa_ai2d_exact(tmp_path: Path) -> None:
    gqa = write_jsonl(
        tmp_path / "gqa.jsonl",
        [{"question_id": "g1", "answer": "cup"}, {"question_id": "g2", "answer": "no"}],
    )
    out = score_benchmark(
        "gqa_testdev", gqa, [{"questionId": "g1", "answer": "tea cup"}, {"questionId": "g2", "answer": "No."}]
    )
    assert out["metrics"] == {"accuracy": 100.0} and out["details"][0]["cleaned"] == "cup"
    ai2d = write_jsonl(tmp_path / "ai2d.jsonl", [{"image": "d.png", "question_id": 5, "answer": "B"}])
    assert score_benchmark("ai2diagram_test", ai2d, [{"image": 5, "answer": " b "}])["metrics"] == {
        "accuracy": 100.0
    }
    ocr = write_jsonl(tmp_path / "ocr.jsonl", [{"question_id": 1, "answer": "Harry Potter"}])
    assert score_benchmark("ocrvqa_test", ocr, [{"questionId": "1", "answer": "Harry Potter."}])[
        "metrics"
    ] == {"accuracy": 0.0}


def test_docvqa_reads_val_json_or_the_data_answer(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "val.jsonl", [{"question_id": 11, "question": "q", "answer": ["abcd"]}])
    ann = write_json(
        tmp_path / "val_v1.0.json",
        {"dataset_name": "docvqa", "data": [{"questionId": 11, "answers": ["abcd   "]}]},
    )
    preds = [{"questionId": 11, "answer": "abxx"}]
    assert score_benchmark("docvqa_val", data, preds)["metrics"] == {"anls": 50.0}
    # with val_v1.0.json its answers win: the raw 7-char gold is the denominator
    assert score_benchmark("docvqa_val", data, preds, annotations=ann)["metrics"]["anls"] == pytest.approx(
        100 * (1 - 2 / 7)
    )


def test_choice_scienceqa_and_seed_dimensions(tmp_path: Path) -> None:
    sqa = write_jsonl(
        tmp_path / "sqa.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": i % 2} for i in range(4)]
    )
    out = score_benchmark("scienceqa_test_img", sqa, [{"answer": "A"}, {"answer": 1}, {"answer": "B"}])
    assert [d["score"] for d in out["details"]] == [1.0, 1.0, 0.0, 0.0] and out["num_missing"] == 1
    seed = write_jsonl(
        tmp_path / "seed.jsonl",
        [
            {"question_id": "101", "prompt": "<img>s.jpg</img>\nQ", "answer": "A", "question_type_id": 1},
            {"question_id": "102", "prompt": "p", "answer": "B", "question_type_id": 9},
            {"question_id": "103", "prompt": "p", "answer": "C", "question_type_id": 9},
        ],
    )
    preds = [
        {"question_id": "101", "prediction": "A"},
        {"question_id": "102", "prediction": "B"},
        {"question_id": "103", "prediction": "D"},
    ]
    out = score_benchmark("seed_bench_image", seed, preds)
    assert out["breakdown"]["dimension"] == {"Scene Understanding": 100.0, "Text Recognition": 50.0}
    assert out["metrics"]["accuracy"] == pytest.approx(200 / 3)
    assert out["details"][0]["image"] == "s.jpg"  # SEED lines carry the picture inside the prompt


def test_grounding_details_in_pixels(tmp_path: Path) -> None:
    rows = [
        {"image": "a.jpg", "sent": "the dog", "bbox": [0, 0, 320, 480], "width": 640, "height": 480},
        {"image": "b.jpg", "sent": "the cat", "bbox": [10, 10, 20, 20], "width": 100, "height": 50},
        {"image": "c.jpg", "sent": "a man", "bbox": [0, 0, 50, 50], "width": 100, "height": 100},
    ]
    data = write_jsonl(tmp_path / "refcoco_val.jsonl", rows)
    preds = [
        {"answer": "<ref>the dog</ref><box>(0,0),(999,999)</box>"},  # IoU 0.5: a hit
        {"answer": "it is (100,200,300),(1,2)"},  # malformed: zero box
        {"answer": "(0,0),(499.5,999)"},  # IoU 0.5 again (50x100 box against 50x50)
    ]
    out = score_benchmark("refcoco_val", data, preds)
    assert out["metrics"] == {"precision@1": pytest.approx(200 / 3), "mean_iou": pytest.approx(100 / 3)}
    assert out["breakdown"]["unparsed_boxes"] == 1
    first = out["details"][0]
    assert (first["box"], first["reference_box"], first["iou"], first["image"]) == (
        [0.0, 0.0, 640.0, 480.0],
        [0.0, 0.0, 320.0, 480.0],
        0.5,
        "a.jpg",
    )
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"sent": "x", "bbox": [1, 2, 3], "width": 4, "height": 4}])
    with pytest.raises(GoldError, match=r"bad.jsonl:1: 'bbox' must be"):
        score_benchmark("refcoco_val", bad, [])


def _mme_folder(root: Path, with_answers: list[str] | None = None) -> Path:
    root.mkdir()
    gold = [
        ("1.jpg", "Is there a dog?", "Yes"),
        ("1.jpg", "Is there a cat?", "No"),
        ("2.jpg", "Is it red?", "Yes"),
        ("2.jpg", "Is it blue?", "No"),
    ]
    lines = []
    for i, (img, q, gt) in enumerate(gold):
        fields = [img, q, gt] + ([with_answers[i]] if with_answers else [])
        lines.append("\t".join(fields))
    (root / "existence.txt").write_text("\n".join(lines) + "\n")
    (root / "code_reasoning.txt").write_text("3.jpg\tDoes it print 1?\tyes\n3.jpg\tDoes it print 2?\tno\n")
    return root


def test_mme_from_task_files_and_from_the_results_folder(tmp_path: Path) -> None:
    data = _mme_folder(tmp_path / "Your_Results")
    preds = [
        {"task": "existence", "image": "1.jpg", "question": "Is there a dog?", "answer": "Yes"},
        {"task": "existence", "image": "1.jpg", "question": "Is there a cat?", "answer": "Yes"},
        {"task": "existence", "image": "2.jpg", "question": "Is it red?", "answer": "Yes, it is"},
        {"question_id": mme_question_id("existence", "2.jpg", "Is it blue?"), "answer": "Not really"},
    ]
    out = score_benchmark("mme", data, preds)
    # existence: acc 3/4 = 75, acc+ 1/2 = 50 -> 125; code_reasoning: both missing -> 0
    assert out["metrics"] == {
        "perception": 125.0,
        "cognition": 0.0,
        "existence": 125.0,
        "code_reasoning": 0.0,
    }
    assert out["breakdown"]["tasks"]["existence"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0}
    assert "count" in out["breakdown"]["perception_missing_tasks"] and out["num_missing"] == 2
    # Our generation's records: question_id "task/N" (N the 0-based line), with task/image/question beside it.
    generated = [
        {
            "question_id": f"existence/{i}",
            "answer": p["answer"],
            "task": "existence",
            "image": img,
            "question": q,
        }
        for i, (p, (img, q)) in enumerate(
            zip(
                preds,
                [
                    ("1.jpg", "Is there a dog?"),
                    ("1.jpg", "Is there a cat?"),
                    ("2.jpg", "Is it red?"),
                    ("2.jpg", "Is it blue?"),
                ],
                strict=True,
            )
        )
    ]
    assert score_benchmark("mme", data, generated)["metrics"] == out["metrics"]
    by_line = [{"question_id": f"existence/{i}", "answer": p["answer"]} for i, p in enumerate(preds)]
    assert score_benchmark("mme", data, by_line)["metrics"] == out["metrics"]
    results = _mme_folder(tmp_path / "Qwen-VL-Chat", ["Yes", "Yes", "Yes, it is", "Not really"])
    shutil.copy(data / "code_reasoning.txt", results / "code_reasoning.txt")
    (results / "code_reasoning.txt").write_text(
        "3.jpg\tDoes it print 1?\tyes\tyes\n3.jpg\tDoes it print 2?\tno\tno\n"
    )
    from_folder = score_benchmark("mme", results, results)
    assert from_folder["metrics"] == {
        "perception": 125.0,
        "cognition": 200.0,
        "existence": 125.0,
        "code_reasoning": 200.0,
    }
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "OCR.txt").write_text("a.jpg\tq?\tYes\n")
    with pytest.raises(GoldError, match="two questions per picture"):
        score_benchmark("mme", odd, [])
    (odd / "OCR.txt").write_text("a.jpg\tq?\tMaybe\na.jpg\tq2?\tNo\n")
    with pytest.raises(GoldError, match=r"OCR.txt:1: the answer must be yes or no"):
        score_benchmark("mme", odd, [])


def test_server_splits_validate_and_write_the_servers_shape(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "testdev.jsonl", [{"image": "i.jpg", "question": "q", "question_id": 5}])
    out = score_benchmark(
        "vqav2_testdev", data, [{"question_id": 5, "answer": "yes"}, {"question_id": 6, "answer": "no"}]
    )
    assert (out["metrics"], out["num_missing"], out["unknown_ids"]) == ({}, 0, ["6"])
    assert predictions_for_server("vqav2_testdev", [{"question_id": "5", "answer": "yes"}]) == [
        {"question_id": 5, "answer": "yes"}
    ]
    assert predictions_for_server(
        "vizwiz_test", [{"image": "VizWiz_test_1.jpg", "answer": "unanswerable"}]
    ) == [{"image": "VizWiz_test_1.jpg", "answer": "unanswerable"}]
    assert predictions_for_server("docvqa_test", [{"questionId": 9, "answer": "x"}]) == [
        {"questionId": 9, "answer": "x"}
    ]
    with pytest.raises(ScoringError, match="no 'questionId'"):
        predictions_for_server("docvqa_test", [{"answer": "x"}])
    with pytest.raises(ScoringError, match="scored locally"):
        predictions_for_server("textvqa_val", [])


def test_cider_equals_a_direct_pycocoevalcap_call(tmp_path: Path) -> None:
    pytest.importorskip("pycocoevalcap")
    if shutil.which("java") is None:
        pytest.skip("the PTB tokenizer needs java")
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = {
        1: ["A dog runs on the grass.", "A brown dog is running outside.", "The dog plays in a field."],
        2: ["Two men ride bicycles.", "Cyclists on a road.", "Two people riding bikes down the street."],
        3: ["A plate of food.", "Food on a white plate, with a fork.", "A meal of rice and beans."],
    }
    caps = {1: "A dog running on grass.", 2: "Two men riding bikes on a road.", 3: "A cat sleeping."}
    data = write_json(
        tmp_path / "flickr30k_karpathy_test.json",
        {
            "images": [{"id": i, "image": f"{i}.jpg"} for i in refs],
            "annotations": [
                {"image_id": i, "caption": c, "id": 10 * i + k} for i in refs for k, c in enumerate(refs[i])
            ],
        },
    )
    preds = [{"image_id": i, "caption": c} for i, c in caps.items()]
    out = score_benchmark("flickr", data, preds)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs[i]] for i in refs})
    res = tokenizer.tokenize({i: [{"caption": caps[i]}] for i in refs})
    score, per_image = Cider().compute_score(gts, res)
    assert out["metrics"] == {"CIDEr": 100 * score}
    assert [d["score"] for d in out["details"]] == list(per_image)
    assert out["metrics"]["CIDEr"] > 0
    # A missing caption scores as empty (per-image CIDEr 0) and the others keep theirs.
    missing = score_benchmark("flickr", data, preds[:2])
    assert missing["num_missing"] == 1 and missing["details"][2]["score"] == 0.0
