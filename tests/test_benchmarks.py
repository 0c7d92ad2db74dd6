"""Smoke runs of the benchmark scripts at their smallest settings: they run and print their tables (the figures
themselves are not checked: speed is measured by running the scripts, not by tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_script(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``benchmarks/SCRIPT ARGS`` in a child process on one thread, with the checkout's ``src`` importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(BENCHMARKS.parent / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def run(script: str, *args: str) -> str:
    done = run_script(script, *args, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def table_rows(output: str, header_word: str) -> tuple[str, list[list[str]]]:
    """The header line holding ``header_word`` and the rows between its rule and the next blank line."""
    lines = output.splitlines()
    at = next(i for i, line in enumerate(lines) if header_word in line and not line.startswith(" " * 20))
    rows = []
    for line in lines[at + 2 :]:
        if not line.strip() or line.startswith(("ratio =", "step GiB =", "load average")):
            break
        rows.append(line.split())
    return lines[at], rows


def test_train_step_prints_both_paths_with_a_ratio_and_the_loss_memory_table() -> None:
    out = run(
        "train_step.py", "--size", "tiny", "--lengths", "64", "--accum", "1", "--warmup", "1", "--iters", "1",
        "--loss_tokens", "16", "64", "--loss_chunk", "32", "--loss_eager_max", "64",
    )  # fmt: skip
    header, rows = table_rows(out, "s/it")
    for column in ("mode", "len", "path", "s/it", "tokens/s", "step GiB", "MFU", "ratio"):
        assert column in header
    assert [row[:3] for row in rows] == [["lora-chat", "64", "eager"], ["lora-chat", "64", "optimized"]]
    ratio = float(rows[1][7])
    assert ratio > 0 and float(rows[1][3]) > 0
    assert "measured matmul peak" in out

    header, rows = table_rows(out, "chunked peak")
    assert [row[0] for row in rows] == ["16", "64"]
    assert all(float(value) > 0 for row in rows for value in (row[1], row[2], row[3], row[4]))


def test_data_pipeline_prints_samples_per_second_per_worker_count_and_the_step() -> None:
    out = run(
        "data_pipeline.py", "--samples", "6", "--images", "2", "--workers", "0", "1",
        "--step_size", "tiny", "--step_length", "64",
    )  # fmt: skip
    header, rows = table_rows(out, "samples/s")
    assert "workers" in header
    rates = {(" ".join(row[:-2]), row[-2]): float(row[-1]) for row in rows}
    assert rates[("load + transform + collate", "0")] > 0 and rates[("load + transform + collate", "1")] > 0
    assert rates[("tokenize (scan)", "-")] > 0
    assert any(stage.startswith("training step, tiny, 64 tokens") for stage, _ in rates)


def test_serve_load_prints_its_table() -> None:
    out = run(
        "serve_load.py", "--clients", "1", "2", "--duration", "1", "--batch-sizes", "2", "--max-tokens", "3",
        "--soak", "0",
    )  # fmt: skip
    header, rows = table_rows(out, "req/s")
    for column in ("batch", "clients", "req/s", "tok/s", "ttft", "lat"):
        assert column in header
    assert [row[:2] for row in rows] == [["2", "1"], ["2", "2"]]
    assert all(int(row[2]) > 0 and float(row[3]) > 0 for row in rows)


def failed_run(script: str, *args: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of a benchmark script expected to stop early (a few seconds)."""
    done = run_script(script, *args, timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_serve_vs_original_names_what_it_lacks_in_one_line(tmp_path: Path) -> None:
    code, out, err = failed_run("serve_vs_original.py")
    assert (code, out) == (1, "")
    assert err == (
        "serve_vs_original: --remote-code DIR is required: a folder with configuration_qwen.py, modeling_qwen.py, "
        "qwen_generation_utils.py, tokenization_qwen.py, visual.py of the Qwen/Qwen-VL-Chat model repository "
        "(or run --ours-only)\n"
    )
    code, _, err = failed_run("serve_vs_original.py", "--remote-code", str(tmp_path / "nowhere"))
    assert (code, err) == (1, f"serve_vs_original: --remote-code {tmp_path / 'nowhere'}: not a folder\n")

    for name in ("modeling_qwen.py", "visual.py"):
        (tmp_path / name).write_text("# stand-in\n")
    code, _, err = failed_run("serve_vs_original.py", "--remote-code", str(tmp_path))
    assert (code, err) == (
        1,
        f"serve_vs_original: --remote-code {tmp_path}: missing configuration_qwen.py, qwen_generation_utils.py, "
        "tokenization_qwen.py (the Qwen/Qwen-VL-Chat remote code)\n",
    )

    for name in ("configuration_qwen.py", "qwen_generation_utils.py", "tokenization_qwen.py"):
        (tmp_path / name).write_text("# stand-in\n")
    code, _, err = failed_run("serve_vs_original.py", "--remote-code", str(tmp_path))
    assert (code, err) == (
        1,
        f"serve_vs_original: --openai-api {tmp_path / 'openai_api.py'}: no such file (openai_api.py of the "
        "QwenLM/Qwen-VL repository)\n",
    )


def test_serve_vs_original_ours_only_prints_our_rows() -> None:
    out = run(
        "serve_vs_original.py", "--ours-only", "--clients", "1", "2", "--duration", "1", "--max-tokens", "3"
    )
    header, rows = table_rows(out, "req/s")
    for column in ("server", "clients", "req/s", "tok/s", "ttft", "lat"):
        assert column in header
    assert [row[:2] for row in rows] == [["ours", "1"], ["ours", "2"]]
    assert all(int(row[2]) > 0 and float(row[4]) > 0 for row in rows)
    assert "original" not in out and "goal" not in out  # nothing to compare with


def test_hard_inputs_prints_the_peak_memory_of_check_data_per_input() -> None:
    out = run("hard_inputs.py", "--csv-mb", "2", "--record-mb", "1")
    header, rows = table_rows(out, "peak MiB")
    assert "growth/file" in header
    assert [row[0] for row in rows] == ["small", "csv", "record"]
    assert [row[2] for row in rows] == ["0", "1", "1"]  # the bad file and the oversized record are reported
    assert "bad JSON" in out and "no sample left to train on" in out


def test_eval_speed_prints_questions_per_second_of_both_loops() -> None:
    out = run("eval_speed.py", "--questions", "3", "--batch-sizes", "2", "--repeat", "1")
    header, rows = table_rows(out, "q/s")
    for column in ("path", "batch", "questions", "seconds", "q/s", "ratio"):
        assert column in header
    assert [row[:3] for row in rows] == [["original", "2", "3"], ["ours", "2", "3"]]
    assert all(float(row[4]) > 0 for row in rows) and float(rows[0][5]) == 1.0


def test_image_size_cost_prints_a_row_per_size_with_the_patches() -> None:
    out = run(
        "image_size_cost.py",
        "--sizes",
        "56",
        "112",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--targets",
        "llm",
        "vit",
    )
    header, rows = table_rows(out, "s/step")
    for column in ("image_size", "patches", "s/step", "step MiB", "trainable"):
        assert column in header
    assert [row[:3] for row in rows] == [["56", "16", "16"], ["112", "64", "16"]]
    assert all(float(row[3]) > 0 and float(row[4]) > 0 for row in rows)
    assert rows[0][5] == rows[1][5]  # the adapters do not grow with the picture


def markdown_rows(output: str) -> list[list[str]]:
    """The cells of each markdown table row after the header and its rule."""
    rows = [line.strip("|").split("|") for line in output.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def test_packing_fill_best_fit_needs_fewer_micro_batches_than_cutting_in_order() -> None:
    rows = markdown_rows(run("packing_fill.py", "--samples", "5000", "--budgets", "2048"))
    assert [(row[0], row[3], row[4]) for row in rows] == [
        (lengths, "2048", method)
        for lengths in ("captions (1 picture)", "chats (lognormal)", "mixed (30% long)")
        for method in ("cut in order", "best fit (ours)")
    ]
    batches = [int(row[5]) for row in rows]
    assert batches[1] <= 1.01 * batches[0]  # narrow lengths: what no sample fits is left either way
    assert batches[3] < 0.85 * batches[2] and batches[5] < 0.85 * batches[4]  # long-tailed: far fewer
    chats_cut, chats_best = rows[2], rows[3]
    assert float(chats_best[6].rstrip("%")) > 98 > 90 > float(chats_cut[6].rstrip("%"))


def test_packing_fill_measures_the_lengths_of_given_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    from train_fixtures import write_dataset

    data = write_dataset(tmp_path, n_samples=6)
    rows = markdown_rows(
        run("packing_fill.py", "--data", str(data), "--model", str(tiny_model_dir), "--budgets", "512")
    )
    assert [(row[1], row[3], row[4]) for row in rows] == [
        ("7", "512", "cut in order"),
        ("7", "512", "best fit (ours)"),
    ]  # six picture conversations and one of text
    span = json.loads((tiny_model_dir / "config.json").read_text())["visual"]["n_queries"] + 2
    assert int(rows[0][2]) > 6 * span / 7  # the mean counts each picture's <img> span
