"""make demo, shortened (``qwenvl-train demo --steps small``, what ``make demo DEMO_STEPS=small`` runs): every
step leaves its output, training beats the untrained model on held-out IoU, the merged model answers as the
adapter did, and the table and loss curve come out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qwenvl_train.cli import main as cli_main
from qwenvl_train.demo.run import FULL, SMALL, format_summary, logged_curves, parse_settings
from qwenvl_train.reports.plots import LOSS_COLOUR, METRIC_COLOURS, loss_curve


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    assert cli_main(["demo", "--out", str(out), "--steps", "small"]) == 0
    return out


def test_every_step_leaves_its_output(demo_out):
    for path in ("model/config.json", "model/model.safetensors", "model/qwen.tiktoken", "data/train.json",
                 "data/heldout.json", "trained/model.safetensors", "trained/trainer_state.json",
                 "lora/adapter_model.safetensors", "merged/model.safetensors", "merged/config.json"):  # fmt: skip
        assert (demo_out / path).is_file(), path
    summary = json.loads((demo_out / "summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == SMALL.steps and summary["output"] == str(demo_out)
    for name in ("untrained", "trained", "lora", "merged"):
        report = json.loads((demo_out / f"eval_{name}.json").read_text(encoding="utf-8"))
        assert report["metrics"]["samples"] == SMALL.n_heldout == len(report["samples"])
        assert summary["metrics"][name] == report["metrics"]
    state = json.loads((demo_out / "trained" / "trainer_state.json").read_text())
    assert state["global_step"] == SMALL.steps
    with Image.open(demo_out / "loss.png") as image:
        assert image.size == (640, 400)
    for name in ("data", "eval"):  # the picture reports, with their pictures beside them
        page = Path(summary["reports"][name])
        assert page == demo_out / f"report-{name}" / "index.html" and page.is_file()
        assert 'class="picture"' in page.read_text(encoding="utf-8")
    chat = summary["chat"]
    assert chat["question"] and chat["answer"] and chat["id"].startswith("heldout_")
    if chat["drawn"]:
        with Image.open(chat["drawn"]) as image:
            assert image.size == (224, 224)


def test_training_beats_untrained_and_merge_keeps_answers(demo_out):
    metrics = json.loads((demo_out / "summary.json").read_text())["metrics"]
    assert metrics["trained"]["mean_iou"] > metrics["untrained"].get("mean_iou", 0.0)
    assert metrics["trained"]["malformed_boxes"] < metrics["untrained"]["malformed_boxes"] or (
        metrics["untrained"]["malformed_boxes"] == 0
    )
    lora = json.loads((demo_out / "eval_lora.json").read_text())["samples"]
    merged = json.loads((demo_out / "eval_merged.json").read_text())["samples"]
    assert [s["prediction"] for s in lora] == [s["prediction"] for s in merged]
    assert json.loads((demo_out / "summary.json").read_text())["merged_answers_as_adapter"] is True


def test_table_names_every_stage(demo_out):
    summary = json.loads((demo_out / "summary.json").read_text())
    table = format_summary(summary)
    trained = summary["metrics"]["trained"]
    assert f"trained ({SMALL.steps} steps)" in table and f"{trained['mean_iou']:.3f}" in table
    assert "merged model answers exactly as the adapter: yes" in table and str(demo_out) in table


def test_table_ends_with_the_serve_command(tmp_path):
    metrics = {"samples": 2, "acc@0.5": 0.5, "mean_iou": 0.4}
    summary = {
        "steps": 3, "lora_steps": 1, "merged_answers_as_adapter": True, "loss_curve": "loss.png",
        "metrics": {"untrained": metrics, "trained": metrics, "lora": metrics, "merged": metrics},
        "chat": {"question": "q", "answer": "a", "reference": "r", "drawn": None},
        "seconds": {"train": 1.0}, "output": str(tmp_path),
    }  # fmt: skip
    last = format_summary(summary).splitlines()[-1]
    assert last.startswith(f"try it in the browser: qwenvl-train serve --model {tmp_path / 'merged'}")


def test_steps_option():
    assert parse_settings(None) == FULL and parse_settings("small") == SMALL
    assert parse_settings("50").steps == 50
    with pytest.raises(ValueError):
        parse_settings("many")


def count_colour(path: Path, hex_colour: str, tolerance: int = 30) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(pixels - rgb).max(axis=-1) <= tolerance).sum())


def test_loss_curve_from_a_trainer_log(tmp_path):
    with pytest.raises(ValueError, match="as many steps as losses"):
        loss_curve([1, 2], [3.0], tmp_path / "x.png", "t")
    history = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 1.0}, {"step": 2, "eval_loss": 1.5, "eval_runtime": 9.0,
               "eval_acc@0.5": 0.25}, {"step": 3, "loss": 0.1}, {"step": 3, "eval_acc@0.5": 0.75}]  # fmt: skip
    steps, losses, evals = logged_curves(history)
    assert (steps, losses) == ([1, 2, 3], [3.0, 1.0, 0.1])
    assert evals == {"eval_loss": [(2, 1.5)], "eval_acc@0.5": [(2, 0.25), (3, 0.75)]}
    path = loss_curve(steps, losses, tmp_path / "x.png", "t", evals)
    with Image.open(path) as image:
        assert image.size == (640, 400)
    assert count_colour(path, LOSS_COLOUR) > 100 and count_colour(path, METRIC_COLOURS[0]) > 50
