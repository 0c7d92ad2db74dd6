"""The plots of reports and the demo, drawn by matplotlib (Agg backend: no display needed).

matplotlib is imported only here, inside the functions, so commands that draw nothing never load it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOSS_COLOUR = "#1f77b4"
EVAL_LOSS_COLOUR = "#ff7f0e"
METRIC_COLOURS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def length_histogram(lengths: Sequence[int] | Any, max_length: int, out: str | Path) -> Path:
    """A histogram of sample lengths (tokens, image spans counted) with ``max_length`` marked; saved as ``out``."""
    import numpy as np

    plt = _pyplot()
    lengths = np.asarray(lengths, dtype=np.int64)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    try:
        if len(lengths):
            top = max(int(lengths.max()), max_length)
            ax.hist(lengths, bins=np.linspace(0, top * 1.02 + 1, 51), color="#4c72b0", edgecolor="white")
            over = int((lengths > max_length).sum())
            ax.axvline(
                max_length,
                color="#d62728",
                linestyle="--",
                label=f"model_max_length {max_length} ({over} over)",
            )
            ax.legend(loc="upper right")
        else:
            ax.text(0.5, 0.5, "no sample without error", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("tokens per sample (image spans counted, before truncation)")
        ax.set_ylabel("samples")
        ax.set_title(f"sample lengths ({len(lengths)} samples)")
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
    return Path(out)


def loss_curve(
    steps: Sequence[float],
    losses: Sequence[float],
    out: str | Path,
    title: str,
    evals: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> Path:
    """The training loss against steps (log-scale loss), and the evaluation metrics over steps where logged
    (``evals``: name -> ``(step, value)`` points; ``eval_loss`` on the loss axis, the others, in [0, 1], on a second
    axis); saved as ``out``.

    Raises:
        ValueError: no points, or ``steps`` and ``losses`` of different lengths.
    """
    if not steps or len(steps) != len(losses):
        raise ValueError(f"need as many steps as losses (got {len(steps)} and {len(losses)}), at least one")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=100, layout="constrained")
    try:
        ax.plot(steps, losses, color=LOSS_COLOUR, linewidth=1.5, marker="." if len(steps) < 50 else None,
                label="training loss")  # fmt: skip
        positive = all(v > 0 for v in losses)  # a log scale needs every loss above 0
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (log scale)" if positive else "loss")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        other = {name: points for name, points in (evals or {}).items() if points and name != "eval_loss"}
        if (evals or {}).get("eval_loss"):
            xs, ys = zip(*evals["eval_loss"], strict=True)  # type: ignore[index]
            (handle,) = ax.plot(xs, ys, color=EVAL_LOSS_COLOUR, marker="o", label="eval loss")
            handles, labels = [*handles, handle], [*labels, "eval loss"]
        if other:
            right = ax.twinx()
            for k, (name, points) in enumerate(other.items()):
                xs, ys = zip(*points, strict=True)
                colour = METRIC_COLOURS[k % len(METRIC_COLOURS)]
                (handle,) = right.plot(xs, ys, marker="s", linestyle="--", color=colour, label=name)
                handles, labels = [*handles, handle], [*labels, name]
            right.set_ylabel("eval metric")
            right.set_ylim(0, 1.05)
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(handles)), fontsize="small")
        fig.savefig(out)
    finally:
        plt.close(fig)
    return Path(out)


def benchmark_bars(
    rows: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    out: str | Path,
    title: str,
    references: Mapping[str, Sequence[float | None]] | None = None,
) -> Path:
    """Grouped bars, one group per row (a benchmark's metric) and one bar per series (a model), with reference
    figures (the paper's) as horizontal ticks over the groups; None values are left out. Saved as ``out``.

    Raises:
        ValueError: no row, or a series whose length is not the number of rows.
    """
    import numpy as np

    if not rows or any(
        len(values) != len(rows) for values in (*series.values(), *(references or {}).values())
    ):
        raise ValueError("need at least one row and one value (or None) per row in every series")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(rows) + 2), 4.4), dpi=100, layout="constrained")
    try:
        x = np.arange(len(rows))
        width = 0.8 / max(1, len(series))
        for k, (name, values) in enumerate(series.items()):
            xs = [x[i] - 0.4 + width * (k + 0.5) for i, v in enumerate(values) if v is not None]
            ys = [v for v in values if v is not None]
            ax.bar(xs, ys, width=width, label=name, color=METRIC_COLOURS[k % len(METRIC_COLOURS)])
        for k, (name, values) in enumerate((references or {}).items()):
            points = [(x[i], v) for i, v in enumerate(values) if v is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.scatter(xs, ys, marker="_", s=900, linewidths=2, color=("black", "dimgrey")[k % 2], label=name,
                           zorder=3)  # fmt: skip
        ax.set_xticks(x, rows, rotation=30, ha="right", fontsize="small")
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize="small")
        fig.savefig(out)
    finally:
        plt.close(fig)
    return Path(out)
