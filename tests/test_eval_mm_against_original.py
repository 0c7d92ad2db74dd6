"""Our metric code against the original scripts themselves, on many generated cases.

The original ``eval_mm`` scripts are not part of this project; point ``QWENVL_ORIGINAL_EVAL_MM`` at a folder
holding ``vqa_eval.py``, ``evaluate_vqa.py`` and ``infographicsvqa_eval.py`` from the Qwen-VL repository to run
these (they are skipped otherwise). Only the scoring functions are taken from ``evaluate_vqa.py`` (read from its
syntax tree, so torch and transformers are not imported).
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import json
import os
import random
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from qwenvl_train.eval_mm.metrics import anls_score, relaxed_score, vqa_score

ORIGINAL = os.environ.get("QWENVL_ORIGINAL_EVAL_MM", "")
pytestmark = pytest.mark.skipif(
    not (ORIGINAL and (Path(ORIGINAL) / "vqa_eval.py").is_file()),
    reason="set QWENVL_ORIGINAL_EVAL_MM to a folder with the original eval_mm scripts",
)

WORDS = [
    "yes",
    "Yes",
    "no",
    "two",
    "2",
    "the dog",
    "a dog",
    "dogs.",
    "dont",
    "don't",
    "1,000",
    "1000",
    "t-shirt",
    "t - shirt",
    "5.",
    "5",
    "hi-fi",
    "red",
    "Red!",
    "none",
    "0",
    "it's",
    "its",
    "(left)",
    "left",
    "1.5",
]


@functools.cache
def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"original_{name}", Path(ORIGINAL) / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _functions(name: str, wanted: set[str]) -> dict[str, Any]:
    tree = ast.parse((Path(ORIGINAL) / f"{name}.py").read_text())
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    namespace: dict[str, Any] = {"Optional": Any}
    exec(compile(ast.Module(body=body, type_ignores=[]), name, "exec"), namespace)  # noqa: S102
    return namespace


def _original_vqa(prediction: str, answers: list[dict[str, Any]]) -> float:
    vqa_eval = _load("vqa_eval")
    gts = {
        1: {
            "answers": answers,
            "question_type": "what",
            "answer_type": "other",
        }
    }
    scorer = vqa_eval.VQAEval(n=2)
    scorer.vqa = SimpleNamespace(qa=gts)
    scorer.vqaRes = SimpleNamespace(qa={1: {"answer": prediction}})
    scorer.params = {"question_id": [1]}
    stdout = sys.stdout
    try:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        scorer.evaluate()
    finally:
        sys.stdout.close()
        sys.stdout = stdout
    return scorer.evalQA[1]


def test_vqa_score_equals_vqa_eval() -> None:
    rng = random.Random(0)
    for case in range(600):
        texts = [rng.choice(WORDS) for _ in range(10)]
        if rng.random() < 0.2:
            texts = [texts[0]] * 10
        # with answer ids (VQAv2) or without (equal annotation dicts then drop out together)
        if case % 2:
            answers = [{"answer": a, "answer_id": i + 1} for i, a in enumerate(texts)]
        else:
            answers = [{"answer": a, "answer_confidence": "yes"} for a in texts]
        prediction = rng.choice(WORDS) + rng.choice(["", ".", " ", "\n"])
        ours = vqa_score(prediction, answers)
        # evalQA holds round(100 * acc, 2)
        assert round(100 * ours, 2) == _original_vqa(prediction, copy.deepcopy(answers)), (prediction, texts)


def test_relaxed_equals_evaluate_vqa() -> None:
    f = _functions("evaluate_vqa", {"relaxed_correctness", "evaluate_relaxed_accuracy"})
    rng = random.Random(1)
    values = [
        "100",
        "95.1",
        "94.9",
        "104.9",
        "105.1",
        "12%",
        "0.12",
        "1,234",
        "1234",
        "0",
        "0.0",
        "Yes",
        "yes",
        " 7 ",
        "7",
        "nan",
        "inf",
        "1_000",
        "1000",
        "-5",
        "5",
    ]
    for _ in range(400):
        prediction, gold = rng.choice(values), rng.sample(values, rng.randint(1, 2))
        expected = f["evaluate_relaxed_accuracy"]([{"answer": prediction, "annotation": list(gold)}])
        assert relaxed_score(prediction, gold) == expected, (prediction, gold)


def test_anls_equals_infographicsvqa_eval(tmp_path: Path) -> None:
    module = _load("infographicsvqa_eval")
    rng = random.Random(2)
    pieces = ["abc", "ABC", " ", "  ", "straße", "strasse", "x", "", "hello world", "hello  world", "abcd"]
    gt = {"dataset_name": "t", "data": []}
    sub = []
    ours = []
    for qid in range(300):
        answers = [
            "".join(rng.choice(pieces) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 2))
        ]
        prediction = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 3)))
        gt["data"].append({"questionId": qid, "question": "q", "answers": answers})
        sub.append({"questionId": qid, "answer": prediction})
        ours.append(anls_score(prediction, answers))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "sub.json").write_text(json.dumps(sub))
    params = SimpleNamespace(answer_types=False, anls_threshold=0.5)
    result = module.evaluate_method(str(tmp_path / "gt.json"), str(tmp_path / "sub.json"), params)
    theirs = [result["per_sample_result"][str(q)]["score"] for q in range(300)]
    assert ours == theirs


def _main_nodes(name: str) -> list[ast.stmt]:
    """Every statement under the script's ``if __name__ == '__main__':``, nested ones included."""
    tree = ast.parse((Path(ORIGINAL) / f"{name}.py").read_text())
    main = next(n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))
    return [n for n in ast.walk(main) if isinstance(n, ast.stmt)]


def _run(nodes: list[ast.stmt], namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "original", "exec"), namespace)  # noqa: S102
    return namespace


def test_gqa_clean_up_equals_evaluate_vqa() -> None:
    from qwenvl_train.eval_mm.metrics import gqa_clean_answer

    clean = next(
        n
        for n in _main_nodes("evaluate_vqa")
        if isinstance(n, ast.If) and "'gqa' in args.dataset" in ast.unparse(n.test)
    )
    samples = [
        "The answer is a red car.",
        "tea cup",
        "Yes, it is.",
        "the color of the sky",
        "Left!",
        "an apple",
        "They are on the table",
        "is it?",
        "A man. A dog",
        "piece of cake",
        "",
        "  Is   ",
        "the the end",
    ]
    for text in samples:
        ns = _run(
            [clean], {"args": SimpleNamespace(dataset="gqa_testdev"), "merged_outputs": [{"answer": text}]}
        )
        assert gqa_clean_answer(text) == ns["merged_outputs"][0]["answer"], text


def test_grounding_equals_evaluate_grounding() -> None:
    torch = pytest.importorskip("torch")
    import re

    from qwenvl_train.eval_mm.metrics import grounding_iou, is_hit

    nodes = _main_nodes("evaluate_grounding")
    pattern = next(n for n in nodes if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "PATTERN")
    loop = next(n for n in nodes if isinstance(n, ast.For) and "merged_outputs" in ast.unparse(n.iter))
    box_iou = _functions("evaluate_grounding", {"box_iou"})["box_iou"]
    box_iou.__globals__.update(torch=torch, box_area=lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    rng = random.Random(3)
    answers = [
        "(0,0),(999,999)",
        "<ref>x</ref><box>(100,200),(500,600)</box>",
        "(500,600),(100,200)",
        "a dog",
        "(10,20,30),(40,50)",
        "(x) then (10,20),(30,40)",
        "( 1, 2),(3 ,4 )",
        "(1e2,2),(3,4)",
    ]
    for _ in range(300):
        w, h = rng.randint(20, 900), rng.randint(20, 900)
        if rng.random() < 0.5:
            answer = rng.choice(answers)
        else:
            answer = "({},{}),({},{})".format(*(rng.randint(0, 999) for _ in range(4)))
        gt = [rng.uniform(0, w / 2), rng.uniform(0, h / 2), rng.uniform(w / 2, w), rng.uniform(h / 2, h)]
        ns = _run(
            [pattern, loop],
            {"re": re, "torch": torch, "box_iou": box_iou, "correct": 0, "total_cnt": 0,
             "merged_outputs": [{"answer": answer, "gt_bbox": gt, "hw": (h, w)}]},
        )  # fmt: skip
        iou, _, _ = grounding_iou(answer, gt, w, h)
        assert is_hit(iou) == (ns["correct"] == 1), (answer, gt, w, h)
        assert iou == ns["iou"] or (iou != iou and ns["iou"] != ns["iou"])
