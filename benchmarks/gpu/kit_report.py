"""The kit's report: ``check.json`` (every step's status, exit, seconds, limit and what it measured) and
``check.md`` (the same as tables, with the original's published figures and the goals beside ours)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from kit_common import STEPS

#: Goals of the optimized LoRA (chat) step on one H200 (issue #21).
GOALS = (
    ("s/it at 384 tokens, fastest optimized setting", "<= 0.35 s/it", 384, None, 0.35),
    ("s/it at 2048 tokens, fastest optimized setting", "<= 1.5 s/it", 2048, None, 1.5),
    ("peak memory at 384 tokens, activation checkpointing on", "<= 21 GB", 384, True, 21.0),
)
GB_PER_GIB = 2**30 / 1e9


def read_status(work: Path) -> dict[str, dict[str, Any]]:
    """check.sh's record of each step: exit status, seconds, the time limit it ran under."""
    status: dict[str, dict[str, Any]] = {}
    path = work / "status.tsv"
    if path.exists():
        for line in path.read_text().splitlines():
            step, code, seconds, limit = line.split("\t")
            status[step] = {"exit": int(code), "seconds": float(seconds), "limit_s": float(limit)}
    return status


def step_state(part: dict | None, run: dict | None) -> str:
    if run is None:
        return "not run"
    if run["exit"] in (124, 137):
        return "timeout"
    if part is None:
        return "error" if run["exit"] else "no record"
    state = part.get("state", "error")
    if state == "running":  # ended without saying how: killed
        return "error"
    if state == "ok" and run["exit"] != 0:
        return "error"
    return state


def goals(lora_rows: list[dict], dry_run: bool) -> list[dict]:
    out = []
    for text, target, length, checkpointing, limit in GOALS:
        rows = [
            r
            for r in lora_rows
            if r.get("mode") == "lora-chat"
            and "s_it" in r
            and r.get("path") == "optimized"
            and r.get("length") == length
            and (checkpointing is None or r.get("checkpointing") == checkpointing)
        ]
        goal: dict[str, Any] = {"goal": text, "target": target, "ours": None, "pass": None}
        if dry_run:
            goal["ours"] = "n/a (dry run)"
        elif rows and "peak" in text:
            gb = rows[0]["peak_gib"] * GB_PER_GIB
            goal.update(ours=f"{gb:.1f} GB ({rows[0]['peak_gib']:.2f} GiB)", **{"pass": gb <= limit})
        elif rows:
            best = min(rows, key=lambda r: r["s_it"])
            setting = "AC on" if best["checkpointing"] else "AC off"
            goal.update(ours=f"{best['s_it']:.3f} s/it ({best['attn']}, {best['loss']}, {setting})")
            goal["pass"] = best["s_it"] <= limit
        else:
            goal["ours"] = "not measured"
        out.append(goal)
    return out


def gather(work: Path, dry_run: bool) -> dict[str, Any]:
    status = read_status(work)
    steps: dict[str, Any] = {}
    for step in STEPS:
        path = work / "parts" / f"{step}.json"
        part = json.loads(path.read_text()) if path.exists() else None
        run = status.get(step)
        entry: dict[str, Any] = {"status": step_state(part, run)}
        if run:
            entry.update(run)
        if part:
            entry.update({k: v for k, v in part.items() if k not in ("step", "state", "dry_run")})
        log = work / "logs" / f"{step}.log"
        if entry["status"] not in ("ok", "not run") and log.exists():
            entry["log_tail"] = log.read_text(errors="replace")[-3000:]
        steps[step] = entry
    setup = steps["setup"]
    return {
        "kit": "benchmarks/gpu/check.sh",
        "dry_run": dry_run,
        "written": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": setup.get("device", {}),
        "versions": setup.get("versions", {}),
        "seconds": round(sum(s.get("seconds", 0) for s in steps.values()), 1),
        "steps": steps,
        "goals": goals(steps["lora"].get("rows", []), dry_run),
    }


# ------------------------------------------------------------------------------------------------ markdown


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "/").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def yes_no(value: Any) -> str:
    return {True: "pass", False: "**FAIL**", None: ""}.get(value, str(value))


def g(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def parity_value(row: dict) -> str:
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    if "error" in row:
        return f"error: {row['error']}"
    if "rel_error" in row:
        return (
            f"rel. error {g(row['rel_error'])}, max abs {g(row['max_abs'])}, loss {row['loss']:.4f} "
            f"(diff {g(row['loss_diff'])}), top-1 {100 * row['top1_agree']:.1f}%"
        )
    if "full" in row:
        return f"{row['loss']:.6f} vs {row['full']:.6f} (diff {g(row['abs_diff'])}, limit {g(row['limit'])})"
    if "max_abs" in row:
        same = "identical" if row["identical"] else f"max abs {g(row['max_abs'])} (limit {g(row['limit'])})"
        return f"{same}; cache hits {row['hits']}, misses {row['misses']}"
    return f"loss {row.get('loss', 0):.4f}"


def train_table(rows: list[dict]) -> list[str]:
    eager = {(r["mode"], r["length"]): r["s_it"] for r in rows if r.get("path") == "eager"}
    body = []
    for r in rows:
        if "s_it" not in r:
            checkpointing = "on" if r.get("checkpointing") else "off"
            body.append([r.get("mode"), r.get("length"), r.get("path"), r.get("attn"), r.get("loss"), checkpointing,
                         f"**{r.get('error', 'no figures')}**"] + [""] * 7)  # fmt: skip
            continue
        base = eager.get((r["mode"], r["length"]))
        ratio = f"{r['s_it'] / base:.3f}" if base and r["path"] != "eager" else ""
        original = f"{r['original_gb']} GB, {r['original_s_it']} s/it" if r.get("original_gb") else ""
        body.append(
            [
                r["mode"],
                r["length"],
                r["path"],
                r["attn"],
                r["loss"],
                "on" if r["checkpointing"] else "off",
                f"{r['s_it']:.3f}",
                f"{r['tokens_s']:.0f}",
                f"{r['peak_gib']:.2f}",
                f"{r['step_gib']:.2f}",
                "" if r.get("reserved_gib") is None else f"{r['reserved_gib']:.2f}",
                f"{100 * r['mfu']:.1f}%",
                ratio,
                original,
            ]
        )
    headers = ["mode", "len", "path", "attn", "loss", "AC", "s/it", "tokens/s", "peak GiB", "step GiB"]
    headers += ["reserved GiB", "MFU", "opt./eager", "original A100-80G"]
    return table(headers, body)


def markdown(report: dict[str, Any]) -> str:
    steps = report["steps"]
    device = report["device"]
    name = device.get("name") or device.get("device", "?")
    lines = [f"# GPU check kit: {name}, {report['written']}", ""]
    if report["dry_run"]:
        lines += [
            "**Dry run** (CPU, tiny models, few iterations): it checks that every step runs; its figures say "
            "nothing about a GPU.",
            "",
        ]
    versions = report["versions"]
    shown = ("python", "torch", "transformers", "peft", "bitsandbytes", "cut_cross_entropy", "flash_attn")
    lines += ["Versions: " + ", ".join(f"{k} {str(versions.get(k, '?')).split(' (')[0]}" for k in shown), ""]
    if device.get("memory_gib"):
        lines += [f"Device: {name}, {device['memory_gib']} GiB, capability {device.get('capability')}", ""]
    lines += [f"Total: {report['seconds']} s.", "", "## Steps", ""]
    rows = []
    for step, entry in steps.items():
        notes = list(entry.get("notes", []))
        if entry.get("error"):
            notes.insert(0, entry["error"])
        rows.append(
            [
                step,
                entry["status"],
                entry.get("exit"),
                entry.get("seconds"),
                entry.get("limit_s"),
                "; ".join(notes),
            ]
        )
    lines += table(["step", "status", "exit", "seconds", "limit s", "notes"], rows)

    lines += ["## Goals: optimized LoRA (chat) step, one H200", ""]
    lines += table(
        ["goal", "target", "ours", "pass"],
        [[x["goal"], x["target"], x["ours"], yes_no(x["pass"])] for x in report["goals"]],
    )
    lines += [
        "Peak memory: CUDA max_memory_allocated of the whole process at the iteration's peak; GB = 10^9 bytes.",
        "",
    ]

    parity = steps["parity"]
    model = parity.get("model", {})
    lines += [
        f"## 1. Parity: bf16 against fp32 eager ({model.get('size', '?')} model, {model.get('samples', '?')} x "
        f"{model.get('length', '?')} tokens, one image each)",
        "",
    ]
    lines += table(
        ["check", "result", "pass"],
        [[r["check"], parity_value(r), yes_no(r.get("pass"))] for r in parity.get("rows", [])],
    )

    lora = steps["lora"]
    info = lora.get("model", {})
    lines += [
        f"## 2-3. Training steps ({info.get('size', '?')} model, batch 1 x grad-accum {info.get('accum', '?')}, "
        f"one image per sample; median of {info.get('iters', '?')} after {info.get('warmup', '?')} warm-up)",
        "",
    ]
    peaks = {s: steps[s].get("matmul_peak_tflops") for s in ("lora", "qlora", "lora-base")}
    lines += [
        "Measured matmul peak (MFU's denominator), TFLOP/s: "
        + ", ".join(f"{s} {v}" for s, v in peaks.items() if v is not None),
        "",
    ]
    all_rows = [r for s in ("lora", "qlora", "lora-base") for r in steps[s].get("rows", [])]
    lines += train_table(all_rows)
    lines += [
        "The original's figures (one A100-80G, LoRA chat and Q-LoRA, batch 1 x grad-accum 8, gradient "
        "checkpointing): LoRA chat 23.3 GB / 2.2 s/it at 384, 25.1 GB / 3.5 s/it at 1024, 27.3 GB / 5.9 s/it at "
        "2048; Q-LoRA 17.0 GB / 4.2 s/it at 384.",
        "",
    ]

    lines += ["## 4. The product's commands (demo data, train, merge, chat)", ""]
    lines += table(
        ["command", "exit", "seconds", "last lines"],
        [[r["command"], r["exit"], r["seconds"], r["tail"]] for r in steps["cli"].get("rows", [])],
    )

    gen = steps["generate"]
    lines += [
        f"## 5. Generation ({gen.get('model', {}).get('size', '?')} model, greedy, one image per prompt)",
        "",
    ]
    lines += table(
        ["batch", "prompt tokens", "new tokens", "seconds", "tokens/s", "decode tokens/s", "prefill s"],
        [
            [
                r["batch"],
                r["prompt_tokens"],
                r["new_tokens"],
                r["seconds"],
                r["tokens_s"],
                r["decode_tokens_s"],
                r["prefill_s"],
            ]
            for r in gen.get("rows", [])
        ],
    )
    ev = steps["eval"]
    settings = ev.get("settings", {})
    lines += [
        f"## 6. Benchmark generation (`eval --benchmark {settings.get('benchmark', 'textvqa_val')}`, "
        f"{ev.get('model', {}).get('size', '?')} model, {settings.get('questions', '?')} generated questions, at "
        f"most {settings.get('max_new_tokens', '?')} new tokens)",
        "",
    ]
    lines += table(
        ["batch", "questions", "seconds", "questions/s", "answers as batch 1", "empty answers"],
        [
            [
                r["batch"],
                r["questions"],
                r["seconds"],
                r["questions_s"],
                r["same_as_first"],
                r["empty_answers"],
            ]
            for r in ev.get("rows", [])
        ],
    )
    serve = steps["serve"]
    settings = serve.get("settings", {})
    lines += [
        f"## 7. Serving (`qwenvl-train serve`, {settings.get('model', '?')} model, "
        f"{settings.get('dtype', '?')}, streamed, greedy, {settings.get('new_tokens', '?')} new tokens, "
        f"one picture per request, picture cache off; server start {serve.get('start_seconds', '?')} s)",
        "",
    ]
    lines += table(
        ["clients", "requests", "errors", "requests/s", "tokens/s", "TTFT p50 s", "TTFT p99 s", "latency p50 s",
         "latency p99 s"],
        [
            [r["clients"], r["requests"], r["errors"], r["requests_s"], r["tokens_s"], r["ttft_p50_s"],
             r["ttft_p99_s"], r["latency_p50_s"], r["latency_p99_s"]]
            for r in serve.get("rows", [])
        ],
    )  # fmt: skip
    if steps["setup"].get("serve_command") is False:
        lines += ["The server's throughput: no serve command in this version.", ""]
    lines += hires_section(steps["hires"])
    return "\n".join(lines)


def hires_section(hires: dict[str, Any]) -> list[str]:
    """Section 8: LoRA at higher resolutions (issue #28), one row per targets and ``--image_size``."""
    info = hires.get("model", {})
    lines = [
        f"## 8. Higher resolution (`train --image_size N`: LoRA, {info.get('size', '?')} model, "
        f"{info.get('length', '?')} tokens, batch 1 x grad-accum {info.get('accum', '?')}, one picture per sample, "
        "the tower in every forward, activation checkpointing on)",
        "",
    ]
    if hires.get("status") == "not run":
        return lines + [
            "Not run in this call: `bash benchmarks/gpu/check.sh --steps hires` is the second call.",
            "",
        ]
    body = []
    for r in hires.get("rows", []):
        figures = (
            [f"{r['s_it']:.3f}", f"{r['tokens_s']:.0f}", f"{r['peak_gib']:.2f}", f"{r['step_gib']:.2f}",
             f"{100 * r['mfu']:.1f}%"]
            if "s_it" in r else [f"**{r.get('error', 'no figures')}**", "", "", "", ""]
        )  # fmt: skip
        body.append([r.get("targets"), r.get("image_size"), r.get("patches"), *figures])
    lines += table(
        ["--lora_target", "image_size", "ViT patches", "s/it", "tokens/s", "peak GiB", "step GiB", "MFU"],
        body,
    )
    return lines + [
        "The language model sees the same image tokens per picture at every size (256 in Qwen-VL); the ViT sees "
        "(N/14)^2 patches.",
        "",
    ]


def write(work: Path, out: Path, dry_run: bool) -> int:
    report = gather(work, dry_run)
    out.mkdir(parents=True, exist_ok=True)
    (out / "check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = markdown(report)
    (out / "check.md").write_text(text + "\n")
    print(text)
    # A step left out of this call (--steps; hires in a real run's first call) fails nothing.
    return 0 if all(s["status"] in ("ok", "not run") for s in report["steps"].values()) else 1
