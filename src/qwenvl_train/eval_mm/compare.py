"""Comparing models on benchmarks: metrics files in, one markdown table and one bar chart out.

Each model run is a metrics file (the dictionary :func:`~qwenvl_train.eval_mm.scoring.score_benchmark` returns,
as ``eval --out`` writes it), a JSON list of such dictionaries, or a folder of such files (one model's runs on
several benchmarks). The table has one row per benchmark metric found in any run (the catalog's headline metric,
and MME's cognition beside its perception), in catalog order; a column per model; after each model but the first,
its difference to the first (the base, e.g. the model before fine-tuning); and the paper's published Qwen-VL /
Qwen-VL-Chat figures (:mod:`.paper`) as reference columns. Used by ``eval --compare``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .catalog import BENCHMARKS
from .paper import paper_figure


class CompareError(UserError, ValueError):
    """A metrics file that cannot be read for comparison (names the file)."""


@dataclass
class ModelRun:
    """One model's metrics.

    Attributes:
        label: the column title (the file or folder name unless given).
        results: benchmark name -> its metrics dictionary (``metrics``, ``scoring``...).
        source: where it was read from.
    """

    label: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class CompareRow:
    """One row of the table: a benchmark's metric, each model's value, and the paper's."""

    benchmark: str
    key: str
    values: tuple[float | None, ...]
    paper_qwen_vl: float | None
    paper_qwen_vl_chat: float | None
    note: str


def _metrics_dicts(path: Path) -> list[dict[str, Any]]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CompareError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    except json.JSONDecodeError as exc:
        raise CompareError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from exc
    items = loaded if isinstance(loaded, list) else [loaded]
    for item in items:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("benchmark"), str)
            and isinstance(item.get("metrics"), dict)
        ):
            raise CompareError(
                f"{path}: not a metrics file (needs 'benchmark' and 'metrics', as eval --out writes)"
            )
    return items


def load_run(path: Path, label: str | None = None) -> ModelRun:
    """A model's metrics from a metrics file, a JSON list of them, or a folder of them (its ``*.json``).

    Raises:
        CompareError: an unreadable file, or one that is not a metrics file; the same benchmark twice.
    """
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise CompareError(f"{path}: no metrics file (*.json) in the folder")
    run = ModelRun(label or (path.name if path.is_dir() else path.stem), source=str(path))
    for file in files:
        for item in _metrics_dicts(file):
            if item["benchmark"] in run.results:
                raise CompareError(f"{file}: benchmark {item['benchmark']} appears twice for {run.label}")
            run.results[item["benchmark"]] = item
    return run


def _keys(benchmark: str, found: set[str]) -> list[str]:
    entry = BENCHMARKS.get(benchmark)
    keys = [entry.metric] if entry is not None and entry.metric else sorted(found)[:1]
    if benchmark == "mme":
        keys.append("cognition")
    return [k for k in keys if k in found]


def compare_rows(runs: Sequence[ModelRun]) -> list[CompareRow]:
    """The table's rows: every benchmark metric found in ``runs``, in catalog order (unknown names last)."""
    names = {name for run in runs for name in run.results}
    order = [n for n in BENCHMARKS if n in names] + sorted(names - set(BENCHMARKS))
    rows = []
    for name in order:
        found = {k for run in runs for k in run.results.get(name, {}).get("metrics", {})}
        for key in _keys(name, found):
            values = tuple(run.results.get(name, {}).get("metrics", {}).get(key) for run in runs)
            paper = paper_figure(name, key)
            rows.append(
                CompareRow(
                    name,
                    key,
                    tuple(None if v is None else float(v) for v in values),
                    paper.qwen_vl if paper else None,
                    paper.qwen_vl_chat if paper else None,
                    paper.note if paper else "",
                )
            )
    return rows


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _diff(value: float | None, base: float | None) -> str:
    return "–" if value is None or base is None else f"{value - base:+.2f}"


def compare_table(runs: Sequence[ModelRun], paper: bool = True) -> str:
    """The markdown table of ``runs`` (see the module docstring), with notes on published splits and scorings.

    Raises:
        CompareError: no run, or no benchmark in any of them.
    """
    if not runs:
        raise CompareError("nothing to compare: give at least one metrics file")
    rows = compare_rows(runs)
    if not rows:
        raise CompareError("no benchmark metric in the metrics files")
    header = ["Benchmark", "Metric", runs[0].label]
    for run in runs[1:]:
        header += [run.label, f"Δ {run.label}"]
    if paper:
        header += ["Qwen-VL (paper)", "Qwen-VL-Chat (paper)"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    notes: list[str] = []
    for row in rows:
        cells = [row.benchmark, row.key, _fmt(row.values[0])]
        for value in row.values[1:]:
            cells += [_fmt(value), _diff(value, row.values[0])]
        if paper:
            cells += [_fmt(row.paper_qwen_vl), _fmt(row.paper_qwen_vl_chat)]
            if row.note:
                notes.append(f"{row.benchmark}: the paper's figure was {row.note}.")
                cells[0] += f" [{len(notes)}]"
        lines.append("| " + " | ".join(cells) + " |")
    scorings = sorted({str(r.get("scoring", "original")) for run in runs for r in run.results.values()})
    footer = [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    footer.append(f"Scoring: {', '.join(scorings)} (MME on its 0-2000 / 0-800 scale, the rest 0-100).")
    return "\n".join(lines) + "\n\n" + "\n".join(footer) + "\n"


def compare_chart(runs: Sequence[ModelRun], out: Path, paper: bool = True) -> Path:
    """A bar chart of the table, the paper's figures as ticks; PNG. MME is left out (its scale is not 0-100)
    unless it is the only benchmark.

    Raises:
        CompareError: no benchmark metric in the runs.
    """
    from ..reports.plots import benchmark_bars

    every = compare_rows(runs)
    rows = [r for r in every if r.benchmark != "mme"] or every
    if not rows:
        raise CompareError("no benchmark metric in the metrics files")
    labels = [f"{r.benchmark} {r.key}" for r in rows]
    series = {run.label: [r.values[i] for r in rows] for i, run in enumerate(runs)}
    references = None
    if paper:
        references = {
            "Qwen-VL (paper)": [r.paper_qwen_vl for r in rows],
            "Qwen-VL-Chat (paper)": [r.paper_qwen_vl_chat for r in rows],
        }
    title = "MME" if rows[0].benchmark == "mme" else "benchmark metrics"
    return benchmark_bars(labels, series, out, title, references)


def compare(
    paths: Sequence[Path],
    *,
    labels: Sequence[str] | None = None,
    table_out: Path | None = None,
    chart_out: Path | None = None,
) -> str:
    """Load the runs at ``paths`` (the first is the base), return the markdown table, and write it to
    ``table_out`` and the chart to ``chart_out`` when given."""
    if labels is not None and len(labels) != len(paths):
        raise CompareError(f"{len(labels)} labels for {len(paths)} metrics files")
    runs = [load_run(Path(p), labels[i] if labels else None) for i, p in enumerate(paths)]
    if labels is None and len({run.label for run in runs}) < len(runs):
        for run in runs:  # e.g. base/metrics.json and tuned/metrics.json: name them by their folder too
            run.label = f"{Path(run.source).parent.name}/{run.label}"
    table = compare_table(runs)
    if table_out is not None:
        from ..outputs import write_output

        write_output(table_out, table, "--out")
    if chart_out is not None:
        compare_chart(runs, Path(chart_out))
    return table
