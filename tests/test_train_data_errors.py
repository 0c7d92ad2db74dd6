"""Bad data in ``qwenvl-train train``: found by the scan before the model is loaded, printed once as lines without a
traceback (also under torchrun), exit status 1; images failing during training replaced and counted (skip) or
stopping with one line (raise); ranks that read different data stop together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import qwenvl_train.training.run as run
from qwenvl_train.data import TrainingDataError, scan
from train_fixtures import cpu_args, cpu_env, free_port, write_dataset

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo.json"


def write_bad_data(folder: Path) -> tuple[Path, list[str]]:
    """One sample with a bad box and a missing image, one fine sample; and the two error lines expected."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = [
        {"id": "bad", "conversations": [{"from": "user", "value": "<img>nope.png</img>Where?"},
                                        {"from": "assistant", "value": "<ref>x</ref><box>(5,5),(1,1)</box>"}]},
        {"id": "fine", "conversations": [{"from": "user", "value": "q"}, {"from": "assistant", "value": "a"}]},
    ]  # fmt: skip
    data = folder / "bad.json"
    data.write_text(json.dumps(samples))
    return data, [
        f"{data}:1: sample 'bad': turn 1: <box>(5,5),(1,1)</box>: inverted corners (need x1 <= x2 and y1 <= y2)",
        f"{data}:1: sample 'bad': turn 0: {folder / 'nope.png'}: no such file",
    ]


def test_bad_data_stops_before_the_model_is_loaded(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, lines = write_bad_data(tmp_path / "data")

    def no_model(args):  # noqa: ANN001, ANN202
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(run, "load_model", no_model)
    from qwenvl_train.cli import main

    assert main(["train", *cpu_args(tiny_model_dir, data, tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "qwenvl-train: 2 error(s) in the training data" in err
    for line in lines:
        assert err.count(line) == 1, err
    assert "Traceback" not in err
    # with --on_error skip the scan passes, and the model is loaded next
    with pytest.raises(AssertionError, match="the model was loaded"):
        run.train(cpu_args(tiny_model_dir, data, tmp_path / "out", "--on_error", "skip"))


def test_no_sample_left_is_one_line_too(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = write_bad_data(tmp_path / "data")
    code = run.main(
        cpu_args(tiny_model_dir, data, tmp_path / "out", "--model_max_length", "8", "--on_error", "skip")
    )
    assert code == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("qwenvl-train: no training samples left: 0/2 samples kept") and "Traceback" not in err
    )


def delete_after_scan(monkeypatch: pytest.MonkeyPatch, image: Path) -> None:
    """The image disappears between the scan and training (as a file on a flaky share would)."""
    build_datasets = run.build_datasets

    def build_then_delete(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        datasets = build_datasets(*args, **kwargs)
        image.unlink()
        return datasets

    monkeypatch.setattr(run, "build_datasets", build_then_delete)


def test_an_image_failing_during_training_is_replaced_and_counted(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_dataset(tmp_path / "data")  # 9 samples: an epoch is 5 steps of 2
    delete_after_scan(monkeypatch, tmp_path / "data" / "images" / "3.png")
    trainer = run.train(
        cpu_args(
            tiny_model_dir, data, tmp_path / "out", "--tune", "lora", "--max_steps", "5", "--on_error", "skip"
        )
    )
    assert trainer.state.global_step == 5  # the same number of steps as with the image there
    assert trainer.replaced_samples == 1  # sample s3, drawn once in the epoch
    logged = [entry for entry in trainer.state.log_history if "replaced_samples" in entry]
    assert [(entry["replaced_samples"], entry["step"]) for entry in logged] == [(1, 5)]
    assert (
        "qwenvl-train: 1 sample(s) replaced by the next sample because an image failed to load"
        in capsys.readouterr().out
    )


@pytest.mark.parametrize("progress_bar", [False, True])
def test_an_image_failing_during_training_stops_it_with_one_line(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    progress_bar: bool,
) -> None:
    data = write_dataset(tmp_path / "data")
    image = tmp_path / "data" / "images" / "3.png"
    delete_after_scan(monkeypatch, image)
    options = ("--tune", "lora", "--max_steps", "5", "--dataloader_num_workers", "1")  # raised in a worker
    if progress_bar:  # the error is printed on a line of its own, not after the bar's last state
        options += ("--disable_tqdm", "false")
    assert run.main(cpu_args(tiny_model_dir, data, tmp_path / "out", *options)) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("qwenvl-train")]
    lines = data.read_text().splitlines()
    line = (
        next(n for n, text in enumerate(lines, 1) if '"id": "s3"' in text) - 1
    )  # the record starts at its "{"
    assert err == [
        f"qwenvl-train: {data}:{line}: sample 's3': turn 0: {image}: no such file (run `qwenvl-train check-data "
        "--verify_images full` to find every such image before training, or pass --on_error skip)"
    ]


def test_ranks_that_read_different_data_stop_together(
    vocab_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qwenvl_train.tokenizer import QwenVLTokenizer

    tok = QwenVLTokenizer(vocab_file=str(vocab_file))
    results = [scan(DEMO, tok, n_queries=16)]
    other = run.scan_fingerprint(scan(DEMO, tok, n_queries=16, options=None)).replace(
        "8 samples", "7 samples"
    )
    answers = {"same": [run.scan_fingerprint(results[0])], "other": [other]}
    state = {"rank1": "same"}

    def all_gather_object(out, mine):  # noqa: ANN001, ANN202 - two ranks: this one and a simulated rank 1
        out[0], out[1] = mine, answers[state["rank1"]]

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    run.agree_across_ranks(results)  # the same verdict: nothing to say
    state["rank1"] = "other"
    with pytest.raises(
        TrainingDataError, match=r"the ranks read different data \(rank 0: 0 errors, 8 samples kept"
    ):
        run.agree_across_ranks(results)


@pytest.mark.slow
def test_torchrun_bad_data_errors_printed_once_without_traceback(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Both ranks scan before loading the model, reach the same verdict and exit 1; rank 0 prints the errors.
    (torchrun's own launcher then reports the failed workers, with a traceback of its own code.)"""
    data, lines = write_bad_data(tmp_path / "data")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "qwenvl_train.train", *cpu_args(tiny_model_dir, data, tmp_path / "out"), "--ddp_backend", "gloo"]  # fmt: skip
    proc = subprocess.run(cmd, env=cpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-5000:]
    assert output.count("qwenvl-train: 2 error(s) in the training data") == 1, output[-5000:]
    for line in lines:
        assert output.count(line) == 1, output[-5000:]
    assert "qwenvl_train" not in "".join(
        row for row in output.splitlines() if row.lstrip().startswith('File "')
    )
    assert not (tmp_path / "out").exists()  # stopped before anything was written
