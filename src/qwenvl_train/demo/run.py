"""``qwenvl-train demo`` (``make demo``): the whole product, offline, on a small model and generated data.

    make demo                      # or: qwenvl-train demo --out runs/demo
    make demo DEMO_STEPS=small     # the shortened variant CI runs

Every step runs the product's own command line in a child process, as a user would type it:

1. ``make-tiny --preset demo`` (random weights, genuine tokenizer) and ``demo-data``; ``check-data`` on both splits;
2. ``eval`` of the untrained model on the held-out split (Acc@0.5, mean IoU);
3. ``train`` with the recipe ``finetune/demo.yaml`` (full fine-tuning from random weights);
4. ``eval`` again; a short LoRA stage (``train`` with ``finetune/demo-lora.yaml``) on the trained model, ``merge``
   (what ``make merge`` runs),
   and ``eval`` of adapter and merged model, whose answers must be identical;
5. ``chat --draw`` on one held-out question;
6. a before/after table, ``loss.png`` (matplotlib), ``answer.png``, the ``eval_*.json`` files and ``summary.json``
   in the output folder, whose path is printed at the end, with the two picture reports: ``report-data/``
   (``check-data --report``) and ``report-eval/`` (``eval --report`` of the trained model on the held-out split).

The command line is :mod:`qwenvl_train.commands.demo`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..format.markup import image_markup, latest_image
from ..outputs import check_output_folder

#: Most tokens generated per answer (an answer is about 25 tokens; the untrained model would ramble to 512).
MAX_NEW_TOKENS = 40


@dataclass(frozen=True)
class Settings:
    """Sizes of one demo run."""

    steps: int
    n_train: int
    n_heldout: int
    lora_steps: int
    batch_size: int | None  # None: the recipe's


FULL = Settings(steps=300, n_train=2000, n_heldout=64, lora_steps=5, batch_size=None)
#: ``--steps small``: the shortened variant CI runs (same path, fewer steps and samples).
SMALL = Settings(steps=100, n_train=400, n_heldout=16, lora_steps=2, batch_size=8)


class DemoError(UserError, RuntimeError):
    """A step of the demo failed or did not produce what it should; the command line prints its one line."""


def default_config() -> Path:
    """``finetune/demo.yaml`` of the current folder, else of the source tree this package comes from."""
    here = Path("finetune/demo.yaml")
    return here if here.is_file() else Path(__file__).resolve().parents[3] / "finetune" / "demo.yaml"


class Demo:
    """Runs the steps, recording what each produced and how long it took."""

    def __init__(self, out: Path, settings: Settings, config: Path, seed: int) -> None:
        self.out, self.settings, self.config, self.seed = out, settings, config, seed
        self.timings: dict[str, float] = {}
        self.env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}

    def cli(self, name: str, *args: str, capture: bool = False) -> str:
        """Run ``qwenvl-train ARGS`` (as ``python -m qwenvl_train``); stop the demo if it fails."""
        command = [sys.executable, "-m", "qwenvl_train", *args]
        print(f"\n=== {name}: qwenvl-train {' '.join(args)}", flush=True)
        start = time.perf_counter()
        result = subprocess.run(command, env=self.env, stdout=subprocess.PIPE if capture else None, text=True)
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        if result.returncode != 0:
            raise DemoError(f"step {name!r} failed (exit {result.returncode}): qwenvl-train {' '.join(args)}")
        if capture:
            print(result.stdout, end="", flush=True)
        return result.stdout or ""

    def evaluate(
        self, name: str, model: Path, adapter: Path | None = None, report: Path | None = None
    ) -> dict[str, Any]:
        """``qwenvl-train eval`` on the held-out split into ``eval_<name>.json`` (and its picture report into
        ``report``); returns that JSON report."""
        path = self.out / f"eval_{name}.json"
        args = [
            "eval",
            "--model",
            str(model),
            "--data",
            str(self.out / "data" / "heldout.json"),
            "--out",
            str(path),
        ]
        args += ["--max-new-tokens", str(MAX_NEW_TOKENS), "--batch-size", "16"]
        args += ["--report", str(report)] if report else []
        self.cli(f"eval {name}", *args, *(["--adapter", str(adapter)] if adapter else []))
        return json.loads(path.read_text(encoding="utf-8"))

    def train(self, name: str, recipe: Path, *args: str) -> None:
        """``qwenvl-train train --config RECIPE ARGS`` with the demo's seed (and batch size, if it sets one)."""
        batch = self.settings.batch_size
        extra = ["--per_device_train_batch_size", str(batch)] if batch else []
        self.cli(name, "train", "--config", str(recipe), *args, "--seed", str(self.seed), *extra)

    def run(self) -> dict[str, Any]:
        """All steps; returns the summary (also written to ``summary.json``)."""
        out, s = self.out, self.settings
        check_output_folder(out, "--out")  # a file or a device named --out: one line, nothing written over it
        out.mkdir(parents=True, exist_ok=True)
        model, data = out / "model", out / "data"
        self.cli("make-tiny", "make-tiny", str(model), "--preset", "demo", "--seed", str(self.seed))
        self.cli("demo-data", "demo-data", str(data), "--n", str(s.n_train), "--n-heldout", str(s.n_heldout),
                 "--seed", str(self.seed))  # fmt: skip
        train_json, heldout_json = str(data / "train.json"), str(data / "heldout.json")
        data_report, eval_report = out / "report-data", out / "report-eval"
        self.cli("check-data", "check-data", train_json, heldout_json, "--model", str(model),
                 "--model_max_length", "192", "--report", str(data_report))  # fmt: skip
        before = self.evaluate("untrained", model)

        trained = out / "trained"
        self.train("train", self.config, "--model_name_or_path", str(model), "--data_path", train_json,
                   "--output_dir", str(trained), "--max_steps", str(s.steps))  # fmt: skip
        after = self.evaluate("trained", trained, report=eval_report)

        lora, merged = out / "lora", out / "merged"
        self.train("train lora", self.config.with_name("demo-lora.yaml"), "--model_name_or_path", str(trained),
                   "--data_path", train_json, "--output_dir", str(lora), "--max_steps", str(s.lora_steps))  # fmt: skip
        self.cli("merge", "merge", "--adapter", str(lora), "--output", str(merged))
        with_adapter = self.evaluate("lora", trained, adapter=lora)
        merged_eval = self.evaluate("merged", merged)
        same = answers_match(with_adapter, merged_eval)

        answer = self.chat(merged, heldout_json)
        loss_png = self.loss_curve(trained)
        summary = {
            "output": str(out),
            "steps": s.steps,
            "lora_steps": s.lora_steps,
            "recipe": str(self.config),
            "metrics": {name: report["metrics"] for name, report in
                        (("untrained", before), ("trained", after), ("lora", with_adapter), ("merged", merged_eval))},
            "merged_answers_as_adapter": same,
            "chat": answer,
            "loss_curve": str(loss_png),
            "reports": {"data": str(data_report / "index.html"), "eval": str(eval_report / "index.html")},
            "seconds": {name: round(t, 1) for name, t in self.timings.items()},
        }  # fmt: skip
        (out / "summary.json").write_text(
            json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        print("\n" + format_summary(summary))
        if not same:
            raise DemoError("the merged model does not answer the held-out questions as the adapter did")
        return summary

    def chat(self, model: Path, heldout_json: str) -> dict[str, str]:
        """Ask the first single-picture held-out question with ``chat --draw``; returns question and answer."""
        samples = json.loads(Path(heldout_json).read_text(encoding="utf-8"))
        sample = next(s for s in samples if len(s["conversations"]) == 2)
        user = sample["conversations"][0]["value"]
        path = (
            latest_image(user) or ""
        )  # a single-picture question: "Picture 1: <img>path</img>\n" + question
        image = str(Path(heldout_json).parent / path)
        question = user.replace(image_markup(1, path), "", 1)
        drawn = self.out / "answer.png"
        response = self.cli("chat", "chat", "--model", str(model), "--image", image, "--greedy",
                            "--max-new-tokens", str(MAX_NEW_TOKENS), "--draw", str(drawn), question,
                            capture=True)  # fmt: skip
        return {"id": sample["id"], "image": image, "question": question, "answer": response.strip(),
                "reference": sample["conversations"][1]["value"], "drawn": str(drawn) if drawn.exists() else ""}  # fmt: skip

    def loss_curve(self, trained: Path) -> Path:
        """``loss.png`` from the training run's ``trainer_state.json``: the loss, and the evaluation metrics
        where the run logged any."""
        from ..reports.plots import loss_curve

        history = json.loads((trained / "trainer_state.json").read_text())["log_history"]
        steps, losses, evals = logged_curves(history)
        return loss_curve(steps, losses, self.out / "loss.png",
                          f"training loss, demo model, {self.settings.steps} steps", evals)  # fmt: skip


#: Evaluation entries of a Trainer log that are timings, not metrics.
NOT_METRICS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def logged_curves(
    history: list[dict[str, Any]],
) -> tuple[list[float], list[float], dict[str, list[tuple[float, float]]]]:
    """From a Trainer's ``log_history``: the steps and losses of the training log, and each evaluation metric
    (``eval_*`` but the timings) as ``(step, value)`` points."""
    points = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry and "step" in entry]
    evals: dict[str, list[tuple[float, float]]] = {}
    for entry in history:
        for key, value in entry.items():
            if key.startswith("eval_") and key not in NOT_METRICS and isinstance(value, (int, float)):
                evals.setdefault(key, []).append((entry.get("step", 0), float(value)))
    return [p[0] for p in points], [p[1] for p in points], evals


def answers_match(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same sample ids and the same predicted answer for each."""
    return [(x["id"], x["prediction"]) for x in a["samples"]] == [
        (x["id"], x["prediction"]) for x in b["samples"]
    ]


def format_summary(summary: dict[str, Any]) -> str:
    """The before/after table and where everything is."""
    names = {"untrained": "untrained", "trained": f"trained ({summary['steps']} steps)",
             "lora": f"+ LoRA ({summary['lora_steps']} steps)", "merged": "LoRA merged"}  # fmt: skip
    lines = [f"{'held-out':<24}{'Acc@0.5':>9}{'mean IoU':>10}{'samples':>9}"]
    for key, label in names.items():
        m = summary["metrics"][key]
        lines.append(
            f"{label:<24}{m.get('acc@0.5', 0.0):>9.3f}{m.get('mean_iou', 0.0):>10.3f}{m['samples']:>9}"
        )
    chat = summary["chat"]
    same = "yes" if summary["merged_answers_as_adapter"] else "NO"
    lines += [
        f"merged model answers exactly as the adapter: {same}",
        f"chat: {chat['question']}  ->  {chat['answer']}   (reference {chat['reference']})",
        "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items()),
        f"loss curve: {summary['loss_curve']}",
        *(f"{name} report: {path}" for name, path in summary.get("reports", {}).items()),
        f"drawn answer: {chat['drawn'] or '(no box in the answer)'}",
        f"everything (eval_*.json, summary.json, models): {summary['output']}",
        f"try it in the browser: qwenvl-train serve --model {Path(summary['output']) / 'merged'}"
        "   (chat page http://127.0.0.1:8000/, OpenAI-compatible API /v1)",
    ]
    return "\n".join(lines)


def parse_settings(text: str | None) -> Settings:
    """``--steps``: empty for the full demo, ``small`` for the CI variant, or a number of training steps."""
    if not text:
        return FULL
    if text == "small":
        return SMALL
    steps = int(text)
    if steps < 1:
        raise argparse.ArgumentTypeError(f"--steps must be at least 1, got {steps}")
    return Settings(steps, FULL.n_train, FULL.n_heldout, FULL.lora_steps, FULL.batch_size)
