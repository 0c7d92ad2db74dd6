"""README's "Evaluate on benchmarks" section stays true: it names every benchmark of the catalog, its scoring
examples give the figures it states, and its commands parse with the real parsers (the ones that need no GPU or
real data run on generated files: generation with the tiny model and its report, scoring saved answers, the
comparison)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TITLE = "### Evaluate on benchmarks"


def section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{TITLE}\n")
    end = re.compile(r"\n#{2,3} ").search(text, start + 1)
    return text[start : end.start() if end else None]


def commands() -> list[list[str]]:
    """Each command of the section's bash blocks (continuations joined, comments dropped), as argv."""
    blocks = re.findall(r"```bash\n(.*?)```", section(), flags=re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def product_argv(command: list[str]) -> list[str] | None:
    """The argv of ``qwenvl-train`` in a command (``torchrun ... -m qwenvl_train ARGS`` too); None for others."""
    if command[0] == "qwenvl-train":
        return command[1:]
    if command[0] == "torchrun":
        return command[command.index("qwenvl_train") + 1 :]
    return None


def benchmark_wired() -> bool:
    from qwenvl_train.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return "--benchmark" in sub.choices["eval"]._option_string_actions


def test_the_section_names_every_benchmark_of_the_catalog() -> None:
    from qwenvl_train.eval_mm.catalog import BENCHMARKS

    names = section().split("The names are the original's:")[1].split("whose answers go")[0]
    named = {name for span in re.findall(r"`([^`]+)`", names) for name in span.split()}
    assert named == set(BENCHMARKS)


def test_the_scoring_examples_give_the_figures_stated() -> None:
    from qwenvl_train.eval_mm.metrics import grounding_iou, relaxed_score, vqa_score

    text = section()
    assert "ten humans said `yes.`, the model `yes.`: 0 / 100" in text
    assert [vqa_score("yes.", ["yes."] * 10, s) for s in ("original", "official")] == [0.0, 1.0]
    assert "Three said `two` (the seven others something else), the model `2`: 0 / 90" in text
    humans = ["two"] * 3 + ["three"] * 7
    assert [vqa_score("2", humans, s) for s in ("original", "official")] == [0.0, pytest.approx(0.9)]
    assert "gold `95.1`, answer `100`: right (4.9 % of 100) / wrong (5.15 % of 95.1)" in text
    assert [relaxed_score("100", ["95.1"], s) for s in ("original", "official")] == [1.0, 0.0]
    assert (
        "answer `(500,600),(100,200)`, reference `[100, 200, 500, 600]` on a 999 x 999 picture: IoU 0 / 1"
        in text
    )
    ious = [
        grounding_iou("(500,600),(100,200)", [100, 200, 500, 600], 999, 999, s)[0]
        for s in ("original", "official")
    ]
    assert ious == [0.0, pytest.approx(1.0)]


def test_every_command_parses() -> None:
    from qwenvl_train.cli import build_parser
    from qwenvl_train.training.arguments import build_parser as train_parser

    found = [c for c in commands() if product_argv(c) is not None]
    assert [product_argv(c)[0] for c in found] == ["eval"] * 5 + ["serve"]  # type: ignore[index]
    if not benchmark_wired():
        pytest.skip("eval --benchmark is not wired into commands/eval.py on this branch yet")
    options = train_parser()._option_string_actions
    assert "--eval_benchmark" in options and "--metric_for_best_model" in options
    for command in found:
        build_parser().parse_args(product_argv(command))  # an unknown option or value exits


@pytest.fixture
def textvqa_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The section's textvqa_val files under ``data/textvqa`` (three questions, real pictures), and saved answers."""
    folder = tmp_path / "data" / "textvqa"
    folder.mkdir(parents=True)
    rows = []
    for i in range(3):
        Image.new("RGB", (64, 48), (60 * i, 90, 200)).save(folder / f"img{i}.png")
        rows.append({"image": f"data/textvqa/img{i}.png", "question": f"what is {i}?", "question_id": 10 + i})
    (folder / "textvqa_val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    answers = [["2"] * 10, ["red"] * 3 + ["blue"] * 7, ["yes"] * 10]
    annotations = {
        "annotations": [
            {"question_id": 10 + i, "answer_type": "other", "question_type": "what",
             "answers": [{"answer": a, "answer_id": j + 1} for j, a in enumerate(ans)]}
            for i, ans in enumerate(answers)
        ]
    }  # fmt: skip
    (folder / "textvqa_val_annotations.json").write_text(json.dumps(annotations), encoding="utf-8")
    questions = {"questions": [{"question_id": r["question_id"], "question": r["question"]} for r in rows]}
    (folder / "textvqa_val_questions.json").write_text(json.dumps(questions), encoding="utf-8")
    saved = [{"question_id": 10, "answer": "Two"}, {"question_id": 11, "answer": "red"}]
    (tmp_path / "textvqa_val_results.json").write_text(json.dumps(saved), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_section_command(command: list[str], model: Path) -> int:
    from qwenvl_train.cli import main

    argv = [str(model) if arg == "/models/Qwen-VL" else arg for arg in product_argv(command) or []]
    return main(argv)


def test_scoring_saved_answers_and_comparing_run_as_written(
    textvqa_folder: Path, tiny_model_dir: Path
) -> None:
    if not benchmark_wired():
        pytest.skip("eval --benchmark is not wired into commands/eval.py on this branch yet")
    scored = next(c for c in commands() if "--predictions" in c)
    assert run_section_command(scored, tiny_model_dir) == 0
    result = json.loads((textvqa_folder / "textvqa_val.json").read_text())
    # "Two" -> "2" (1.0), "red" said by 3 of 10 (0.9), the third missing (0.0)
    assert (result["scoring"], result["num_missing"]) == ("official", 1)
    assert result["metrics"]["vqa_accuracy"] == pytest.approx(100 * 1.9 / 3)
    for model, answer in (("base", "Two"), ("lora", "2")):
        (textvqa_folder / "runs" / model).mkdir(parents=True, exist_ok=True)
        out = textvqa_folder / "runs" / model / "textvqa_val.json"
        argv = ["eval", "--benchmark", "textvqa_val", "--predictions", "p.json", "--data",
                "data/textvqa/textvqa_val.jsonl", "--annotations", "data/textvqa/textvqa_val_annotations.json",
                "--out", str(out)]  # fmt: skip
        (textvqa_folder / "p.json").write_text(json.dumps([{"question_id": 10, "answer": answer}]))
        from qwenvl_train.cli import main

        assert main(argv) == 0
    compare = next(c for c in commands() if "--compare" in c)
    assert run_section_command(compare, tiny_model_dir) == 0
    table = (textvqa_folder / "compare.md").read_text()
    assert "textvqa_val" in table and "63.8" in table  # the paper's Qwen-VL figure beside ours
    assert (textvqa_folder / "compare.png").stat().st_size > 1000


def test_generating_with_a_report_runs_as_written(textvqa_folder: Path, tiny_model_dir: Path) -> None:
    if not benchmark_wired():
        pytest.skip("eval --benchmark is not wired into commands/eval.py on this branch yet")
    generate = next(c for c in commands() if "--save-predictions" in c)
    assert run_section_command(generate, tiny_model_dir) == 0
    saved = (textvqa_folder / "runs" / "base" / "textvqa_val.jsonl").read_text().splitlines()
    assert [json.loads(line)["question_id"] for line in saved] == [10, 11, 12]
    result = json.loads((textvqa_folder / "runs" / "base" / "textvqa_val.json").read_text())
    assert result["num_questions"] == 3 and result["num_missing"] == 0
    page = (textvqa_folder / "runs" / "base" / "textvqa_val-report" / "index.html").read_text()
    assert page.count('<img class="picture"') == 3 and "vqa_accuracy" in page
