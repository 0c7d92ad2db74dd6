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


def _original_vqa(prediction: str, answers: list[str]) -> float:
    vqa_eval = _load("vqa_eval")
    gts = {
        1: {
            "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)],
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
    for _ in range(400):
        answers = [rng.choice(WORDS) for _ in range(10)]
        if rng.random() < 0.2:
            answers = [answers[0]] * 10
        prediction = rng.choice(WORDS) + rng.choice(["", ".", " ", "\n"])
        ours = vqa_score(prediction, copy.deepcopy(answers))
        # evalQA holds round(100 * acc, 2)
        assert round(100 * ours, 2) == _original_vqa(prediction, answers), (prediction, answers)


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
