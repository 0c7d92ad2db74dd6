"""``qwenvl-train train --eval_data``: generation metrics at each evaluation and at the end, logged like the loss."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from inference_fixtures import last_question, patch_generate, scripted_generate, write_image
from qwenvl_train.training import train
from qwenvl_train.training.generation_eval import GenerationEvalDataError, attach_generation_eval
from train_fixtures import cpu_args, write_dataset

METRICS = ("eval_acc@0.5", "eval_mean_iou", "eval_exact_match")
QUESTIONS = {
    "Where is the red square?": "<ref>the red square</ref><box>(100,200),(400,500)</box>",
    "Where is the blue one?": "<ref>the blue one</ref><box>(0,0),(999,999)</box>",
    "Say hello.": "Hello!",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data")
    train_file = write_dataset(folder, n_samples=4, text_only=False)
    write_image(folder / "images" / "val.png", (56, 56), (200, 30, 30))
    samples = [
        {"id": f"v{i}", "conversations": [
            {"from": "user", "value": ("Picture 1: <img>images/val.png</img>\n" if "<box>" in a else "") + q},
            {"from": "assistant", "value": a}]}
        for i, (q, a) in enumerate(QUESTIONS.items())
    ]  # fmt: skip
    val = folder / "val.json"
    val.write_text(json.dumps(samples))
    return train_file, val


def eval_entries(out: Path) -> list[dict]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [entry for entry in history if "eval_loss" in entry]


def test_metrics_at_every_evaluation_step_next_to_the_loss(
    tiny_model_dir: Path, files: tuple[Path, Path], tmp_path: Path
) -> None:
    train_file, val = files
    out = tmp_path / "out"
    train(cpu_args(tiny_model_dir, train_file, out, "--tune", "lora", "--max_steps", "3", "--eval_data", str(val),
                   "--eval_strategy", "steps", "--eval_steps", "2", "--eval_max_new_tokens", "3",
                   "--per_device_eval_batch_size", "2"))  # fmt: skip
    entries = eval_entries(out)
    # Step 2 (eval_steps) and step 3 (the end); the loss is computed on --eval_data too (no --eval_data_path).
    assert [entry["step"] for entry in entries] == [2, 3]
    for entry in entries:
        assert set(METRICS) <= entry.keys()
        assert all(0.0 <= entry[name] <= 1.0 for name in METRICS)


def test_perfect_answers_log_one_at_the_end_and_reach_wandb(
    tiny_model_dir: Path, files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb = pytest.importorskip("wandb")
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
                        "WANDB_PROJECT": "qwenvl-train-test"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    calls: list[dict] = []
    answer = lambda prompt: QUESTIONS[last_question(prompt).split("\n")[-1]]  # noqa: E731
    patch_generate(monkeypatch, scripted_generate(tok, answer, calls))
    train_file, val = files
    out = tmp_path / "out"
    args = cpu_args(tiny_model_dir, train_file, out, "--max_steps", "2", "--eval_data", str(val),
                    "--eval_data_path", str(train_file))  # fmt: skip
    args[args.index("--report_to") + 1] = "wandb"
    wandb.teardown()  # wandb keeps its settings (WANDB_DIR) per process: start afresh from an earlier test's run
    try:
        train(args)
    finally:
        wandb.teardown()  # and leave none behind; it also waits for the run's record log to be written
    (entry,) = eval_entries(out)  # --eval_strategy no: only the evaluation at the end
    assert entry["step"] == 2
    assert (entry["eval_acc@0.5"], entry["eval_mean_iou"], entry["eval_exact_match"]) == (1.0, 1.0, 1.0)
    assert all(call["generation_config"].do_sample is False for call in calls)
    assert sum(call["input_ids"].shape[0] for call in calls) == len(QUESTIONS)
    records = next(next((tmp_path / "wandb").glob("offline-run-*")).glob("run-*.wandb")).read_bytes()
    assert b"eval/acc@0.5" in records and b"eval/mean_iou" in records and b"eval/exact_match" in records


def test_eval_data_that_cannot_be_evaluated_is_an_error_or_skipped(tmp_path: Path) -> None:
    path = tmp_path / "val.json"
    path.write_text(json.dumps([
        {"id": "ok", "conversations": [{"from": "user", "value": "a"}, {"from": "assistant", "value": "b"}]},
        {"id": "twice", "conversations": [{"from": "user", "value": "a"}, {"from": "user", "value": "b"},
                                          {"from": "assistant", "value": "c"}]},
    ]))  # fmt: skip
    trainer = SimpleNamespace(args=SimpleNamespace(per_device_eval_batch_size=4), callbacks=[])
    trainer.add_callback = trainer.callbacks.append
    with pytest.raises(
        GenerationEvalDataError,
        match="(?s)1 --eval_data sample.*sample 'twice': turn 1: an assistant turn was expected",
    ):
        attach_generation_eval(trainer, [str(path)], None, "raise", None)
    attach_generation_eval(trainer, [str(path)], None, "skip", 7)
    assert [s.id for s in trainer.generation_eval.samples] == ["ok"]
    assert trainer.generation_eval.max_new_tokens == 7
    assert len(trainer.callbacks) == 1


@pytest.mark.slow
def test_torchrun_zero3_splits_the_samples_over_ranks_and_gathers_each_once(
    tiny_model_dir: Path, files: tuple[Path, Path], tmp_path: Path
) -> None:
    """Two ZeRO-3 ranks (parameters partitioned: every forward gathers from both). Five samples: rank 0 answers
    three, rank 1 two plus a repeat of sample 0 so both run the same generate calls. The answers are scripted
    (tests/train_eval_dist_worker.py): exact match 3/4 only if every sample is scored once (the repeat counted
    gives 3/5, a rank's results lost 2/3 or 2/2)."""
    from test_train_distributed import BACKENDS, CPU_OPTIONS, cpu_env, free_port, run_checked

    train_file, val = files
    questions = ["Say hello.", "Where is the red square?", "Say yes.", "Say no.", "Say yes."]
    answers = {"Say hello.": "Hello!", "Say yes.": "Yes.", "Say no.": "No.", **QUESTIONS}
    samples = [
        {"id": f"v{i}", "conversations": [
            {"from": "user", "value": ("Picture 1: <img>images/val.png</img>\n" if "<box>" in answers[q] else "") + q},
            {"from": "assistant", "value": answers[q]}]}
        for i, q in enumerate(questions)
    ]  # fmt: skip
    val5 = val.parent / "val5.json"
    val5.write_text(json.dumps(samples))
    out = tmp_path / "out"
    worker = Path(__file__).with_name("train_eval_dist_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(worker), "--model_name_or_path", str(tiny_model_dir), "--data_path", str(train_file),
           "--output_dir", str(out), "--tune", "lora", *BACKENDS["zero3"], *CPU_OPTIONS,
           "--eval_data", str(val5), "--per_device_eval_batch_size", "2", "--max_steps", "2",
           "--eval_max_new_tokens", "3"]  # fmt: skip
    run_checked(cmd, cpu_env())
    (entry,) = eval_entries(out)
    assert entry["step"] == 2
    assert entry["eval_acc@0.5"] == 1.0 and entry["eval_mean_iou"] == 1.0
    assert entry["eval_exact_match"] == pytest.approx(3 / 4)
