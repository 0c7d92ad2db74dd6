"""``qwenvl-train eval`` and its pieces: samples from conversations, batched left-padded generation, scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from inference_fixtures import last_question, patch_generate, scripted_generate, write_image
from qwenvl_train.cli import main
from qwenvl_train.data.engine.records import read_samples
from qwenvl_train.inference.evaluate import EvalDataError, eval_sample, generate_answers, read_eval_samples
from qwenvl_train.inference.generation import chat_generation_config, left_pad, load_pixels

SAMPLES = [
    {"id": "box1", "conversations": [
        {"from": "user", "value": "Picture 1: <img>images/a.png</img>\nWhere is the red square?"},
        {"from": "assistant", "value": "<ref>the red square</ref><box>(100,100),(400,400)</box>"}]},
    {"id": "box2", "conversations": [
        {"from": "user", "value": "Picture 1: <img>images/b.png</img>\nWhat is it?"},
        {"from": "assistant", "value": "A square."},
        {"from": "user", "value": "Where is <ref>it</ref>?"},
        {"from": "assistant", "value": "<box>(500,500),(900,900)</box><box>(0,0),(100,100)</box>"}]},
    {"id": "text1", "conversations": [
        {"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "Hello!"}]},
    {"id": "text2", "conversations": [
        {"from": "system", "value": "You answer with one word."},
        {"from": "user", "value": "Picture 1: <img>images/a.png</img>\nWhat colour is the square?"},
        {"from": "assistant", "value": "Red."}]},
]  # fmt: skip
#: The reference answer by the last line of the question.
ANSWERS = {s["conversations"][-2]["value"].split("\n")[-1]: s["conversations"][-1]["value"] for s in SAMPLES}


def question(prompt: str) -> str:
    """The last line of a decoded prompt's last question (image spans decode to pads, not paths)."""
    return last_question(prompt).split("\n")[-1]


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("evaldata")
    write_image(folder / "images" / "a.png", (80, 60), (220, 20, 20))
    write_image(folder / "images" / "b.png", (50, 90), (20, 20, 220))
    path = folder / "test.json"
    path.write_text(json.dumps(SAMPLES))
    return path


def test_samples_split_into_prompt_and_reference(data_file: Path) -> None:
    samples, errors = read_eval_samples(data_file)
    assert errors == []
    box2 = samples[1]
    assert (box2.id, box2.query, box2.reference) == (
        "box2",
        "Where is <ref>it</ref>?",
        SAMPLES[1]["conversations"][3]["value"],
    )
    assert box2.history == [("Picture 1: <img>images/b.png</img>\nWhat is it?", "A square.")]
    assert samples[3].system == "You answer with one word." and samples[0].system is None


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([("user", "a"), ("user", "b"), ("assistant", "c")], "turn 1: an assistant turn was expected here"),
        (
            [("user", "a"), ("assistant", "b"), ("user", "c")],
            "turn 2: the last turn must be the assistant answer",
        ),
        ([("assistant", "a")], "turn 0: a user turn was expected here"),
        (
            [("user", "a"), ("assistant", "<ref>x</ref><box>(1,2),(3</box>")],
            "turn 1: the reference answer has a malformed <box>",
        ),
    ],
)
def test_samples_that_cannot_be_evaluated_are_named(tmp_path: Path, turns, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"id": "s", "conversations": [{"from": r, "value": v} for r, v in turns]}]))
    (raw,), _ = read_samples(path)
    with pytest.raises(EvalDataError, match=f"{path}.*sample 's': {message}"):
        eval_sample(raw)


def test_left_padded_batch_equals_each_prompt_alone(model, tok, data_file: Path) -> None:
    samples, _ = read_eval_samples(data_file)
    config = chat_generation_config(model, do_sample=False, max_new_tokens=6)
    one_by_one, _ = generate_answers(model, tok, samples, config, batch_size=1)
    batched, _ = generate_answers(model, tok, samples, config, batch_size=3)
    assert batched == one_by_one and all(one_by_one)
    # The logits of the prompts' last positions, padded on the left in one batch vs alone.
    from qwenvl_train.inference.evaluate import _prompt

    prompts = [_prompt(s, tok, config, model.config) for s in samples]
    assert len({len(p.ids) for p in prompts}) == 3  # really different lengths: up to 45 pads
    input_ids, mask = left_pad([p.ids for p in prompts], 151643)
    longest = input_ids.shape[1]
    assert [row.index(1) for row in mask.tolist()] == [longest - len(p.ids) for p in prompts]
    images = [ref for p in prompts for ref in p.images]
    with torch.no_grad():
        together = model(input_ids, attention_mask=mask, pixel_values=load_pixels(images, 56)).logits[:, -1]
        for row, p in enumerate(prompts):
            alone = model(torch.tensor([p.ids]), pixel_values=load_pixels(p.images, 56)).logits[0, -1]
            torch.testing.assert_close(together[row], alone, rtol=0, atol=1e-4)


def run_eval(args: list[str]) -> int:
    return main(["eval", *args])


def test_perfect_answers_score_one_and_every_sample_is_written(
    tiny_model_dir: Path, tok, data_file: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    calls: list[dict] = []
    patch_generate(monkeypatch, scripted_generate(tok, lambda prompt: ANSWERS[question(prompt)], calls))
    out = tmp_path / "results.json"
    assert (
        run_eval(
            ["--model", str(tiny_model_dir), "--data", str(data_file), "--out", str(out), "--batch-size", "3"]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "evaluated 4 sample(s): 2 box answer(s), 2 text answer(s); 0 skipped" in table
    assert "Acc@0.5         1.0000  3 reference box(es)" in table and "exact match     1.0000" in table
    report = json.loads(out.read_text())
    assert report["metrics"] == {"samples": 4, "box_samples": 2, "boxes": 3, "text_samples": 2, "malformed_boxes": 0,
                                 "acc@0.5": 1.0, "mean_iou": 1.0, "exact_match": 1.0, "skipped": 0}  # fmt: skip
    assert [s["id"] for s in report["samples"]] == ["box1", "box2", "text1", "text2"]
    assert report["samples"][1]["boxes"][0] == {"ref": None, "reference": [500, 500, 900, 900],
        "predicted": [500, 500, 900, 900], "predicted_raw": "(500,500),(900,900)", "matched_by": "order", "iou": 1.0}  # fmt: skip
    # Two batches (3 + 1), greedy, left-padded, the images of each batch's rows in order.
    assert [c["input_ids"].shape[0] for c in calls] == [3, 1]
    assert all(c["generation_config"].do_sample is False for c in calls)
    first = calls[0]
    assert (
        first["attention_mask"][:, -1].tolist() == [1, 1, 1] and 0 in first["attention_mask"][:, 0].tolist()
    )
    n_spans = int((first["input_ids"] == 151857).sum())
    assert first["pixel_values"].shape[0] == n_spans


def test_malformed_and_wrong_answers_score_zero_without_crashing(
    tiny_model_dir: Path, tok, data_file: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    bad = {
        "Where is the red square?": "<ref>the red square</ref><box>(100,100),(4",  # cut inside the box
        "Where is <ref>it</ref>?": "<box>(500,500)</box><box>(0,0),(x,y)</box><box>",
        "Say hello.": "Goodbye",
        "What colour is the square?": "<box>(1,2),(3,4)</box>",
    }
    patch_generate(monkeypatch, scripted_generate(tok, lambda prompt: bad[question(prompt)]))
    out = tmp_path / "results.json"
    assert run_eval(["--model", str(tiny_model_dir), "--data", str(data_file), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert (metrics["acc@0.5"], metrics["mean_iou"], metrics["exact_match"]) == (0.0, 0.0, 0.0)
    assert metrics["malformed_boxes"] == 4
    assert "malformed boxes in the predictions (scored 0): 4" in capsys.readouterr().out


def test_real_generation_end_to_end(tiny_model_dir: Path, data_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.json"
    assert run_eval(["--model", str(tiny_model_dir), "--data", str(data_file), "--out", str(out),
                     "--max-new-tokens", "4"]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert len(report["samples"]) == 4 and all(s["prediction"] for s in report["samples"])
    assert 0.0 <= report["metrics"]["mean_iou"] <= 1.0
    assert "eval: 100%" in capsys.readouterr().err  # the progress bar


def test_bad_samples_stop_the_run_or_are_skipped_and_counted(
    tiny_model_dir: Path, tok, data_file: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    bad = [*SAMPLES,
           {"id": "noanswer", "conversations": [{"from": "user", "value": "?"}]},
           {"id": "noimage", "conversations": [{"from": "user", "value": "<img>images/missing.png</img> Hm?"},
                                               {"from": "assistant", "value": "x"}]}]  # fmt: skip
    path = data_file.parent / "bad.json"
    path.write_text(json.dumps(bad))
    # Structure errors are found before the model loads; the whole list, one line each.
    assert run_eval(["--model", str(tiny_model_dir), "--data", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "1 error(s) in the data (or pass --on-error skip)" and "sample 'noanswer'" in err[0]
    # With skip: the missing image is found when its batch is built, skipped and counted too.
    patch_generate(monkeypatch, scripted_generate(tok, lambda prompt: ANSWERS.get(question(prompt), "x")))
    out = tmp_path / "results.json"
    assert (
        run_eval(
            ["--model", str(tiny_model_dir), "--data", str(path), "--out", str(out), "--on-error", "skip"]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["metrics"]["skipped"] == 2 and report["metrics"]["samples"] == 4
    assert any(
        "sample 'noimage'" in line and "missing.png: no such file" in line for line in report["skipped"]
    )
    # Without skip, the missing image stops the run naming the sample.
    path.write_text(json.dumps([bad[0], bad[-1]]))
    assert run_eval(["--model", str(tiny_model_dir), "--data", str(path)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "sample 'noimage'" in last and "missing.png: no such file" in last
