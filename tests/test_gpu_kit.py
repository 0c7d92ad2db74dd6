"""The GPU check kit's dry run (benchmarks/gpu/check.sh --dry-run): every step runs on the CPU with the tiny model
and reports status ok, and the JSON and markdown reports are written, so the kit a lent GPU machine runs in one
call never rots. Its figures are not checked (they say nothing about a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["setup", "parity", "lora", "qlora", "lora-base", "cli", "generate", "eval", "serve", "hires"]


@pytest.mark.slow  # twelve processes, about 2.5 min on two quiet cores: CI runs it, make test-fast does not
def test_check_sh_dry_run_runs_every_step_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="2")
    env.pop("OUT", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT / "src"), env.get("PYTHONPATH", "")] if p)
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu/check.sh"), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    log = (out / "check.log").read_text() if (out / "check.log").exists() else ""
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:] + log[-4000:]

    report = json.loads((out / "check.json").read_text())
    assert report["dry_run"] is True
    assert list(report["steps"]) == STEPS
    for step, entry in report["steps"].items():
        assert entry["status"] == "ok", (step, entry.get("error"), entry.get("log_tail"))
        assert entry["exit"] == 0 and 0 < entry["seconds"] <= entry["limit_s"]

    steps = report["steps"]
    assert {row["model"] for row in steps["setup"]["rows"]} == {"big", "mid"}
    checks = [row["check"] for row in steps["parity"]["rows"]]
    assert any(c.startswith("bf16 sdpa vs fp32 eager") for c in checks)
    assert any(c.startswith("loss chunked") for c in checks) and any(
        c.startswith("vision cache warm") for c in checks
    )
    lora = steps["lora"]["rows"]
    assert {(r["path"], r["checkpointing"]) for r in lora} == {
        ("eager", False),
        ("optimized", False),
        ("optimized", True),
    }
    assert all(r["s_it"] > 0 and r["peak_gib"] > 0 for r in lora)
    assert [r["mode"] for r in steps["qlora"]["rows"]] == ["qlora-nf4"]
    assert {r["path"] for r in steps["lora-base"]["rows"]} == {"eager", "optimized"}
    assert [(r["command"], r["exit"]) for r in steps["cli"]["rows"]] == [
        ("demo-data", 0), ("train", 0), ("merge", 0), ("chat", 0)
    ]  # fmt: skip
    assert [r["batch"] for r in steps["generate"]["rows"]] == [1, 8]
    assert all(r["new_tokens"] > 0 and r["tokens_s"] > 0 for r in steps["generate"]["rows"])
    assert steps["eval"]["settings"]["max_new_tokens"] == 10  # textvqa_val, as the original asks it
    assert [(r["batch"], r["questions"]) for r in steps["eval"]["rows"]] == [(1, 8), (8, 8)]
    assert all(r["questions_s"] > 0 for r in steps["eval"]["rows"])
    assert steps["eval"]["rows"][1]["same_as_first"] == 8  # fp32 on the CPU: batch 8 answers as batch 1
    serve = steps["serve"]["rows"]
    assert [(r["clients"], r["errors"]) for r in serve] == [(1, 0), (8, 0)]
    assert all(
        r["requests"] > 0 and r["tokens_s"] > 0 and 0 < r["ttft_p50_s"] <= r["latency_p50_s"] for r in serve
    )
    assert steps["serve"]["settings"]["new_tokens"] == 4
    assert [goal["ours"] for goal in report["goals"]] == ["n/a (dry run)"] * 3
    hires = steps["hires"]
    assert [(r["targets"], r["image_size"], r["patches"]) for r in hires["rows"]] == [
        (targets, size, (size // 14) ** 2)
        for targets in ("llm", "llm resampler vit")
        for size in (56, 84, 112)
    ]
    assert all(r["s_it"] > 0 and r["mfu"] > 0 for r in hires["rows"])
    # the part names expanded by the product's add_lora: the resampler and ViT adapters add trainable parameters
    assert hires["model"]["trainable llm resampler vit"] > hires["model"]["trainable llm"] > 0

    table = (out / "check.md").read_text()
    assert "Dry run" in table and "| step | status |" in table and "## 7. Serving" in table
    assert "23.3 GB / 2.2 s/it at 384" in table and "<= 0.35 s/it" in table
    assert "## 6. Benchmark generation (`eval --benchmark textvqa_val`" in table
    assert (
        "## 8. Higher resolution (`train --image_size N`" in table
        and "| llm resampler vit | 112 | 64 |" in table
    )
    assert not list(tmp_path.glob("gpukit.*")), "the work folder is removed"
