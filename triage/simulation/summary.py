"""Curves over seeds, labels to reach a share of full-label accuracy, the table and the plot.

``full_label_accuracy`` is what the same loop makes of every pool label: per seed, the same
bootstrap and v1, then one retrain on all the other pool labels (same trainer, same share
reserved for evaluation); the mean over seeds. A target is a fraction of it, and
``labels_to_target`` is the first label count at which the MEAN curve reaches it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from triage.extras import require_extra
from triage.simulation.replay import Curve, RunResult
from triage.simulation.strategies import RANDOM

TARGETS = (0.95, 0.98)


def on_grid(curve: Curve, grid: np.ndarray) -> np.ndarray:
    """Accuracy at each label count of ``grid``: that of the last model trained with at most
    that many labels (a step function: what a user would be serving after spending them)."""
    labels = np.asarray([n for n, _ in curve])
    acc = np.asarray([a for _, a in curve])
    pos = np.searchsorted(labels, grid, side="right") - 1
    return acc[np.clip(pos, 0, None)]


def label_grid(runs: Sequence[RunResult]) -> np.ndarray:
    """Every label count some seed reached, up to the smallest final count of all seeds
    (beyond it a mean would average fewer seeds)."""
    end = min(r.curve[-1][0] for r in runs)
    counts = sorted({n for r in runs for n, _ in r.curve if n <= end})
    return np.asarray(counts, dtype=np.int64)


def mean_curve(runs: Sequence[RunResult]) -> list[list[float]]:
    """[[labels, mean accuracy, std accuracy], ...] over the seeds' runs."""
    grid = label_grid(runs)
    acc = np.vstack([on_grid(r.curve, grid) for r in runs])
    return [[int(n), float(m), float(s)] for n, m, s in zip(grid, acc.mean(axis=0), acc.std(axis=0))]


def labels_to(curve: list[list[float]], target: float) -> Optional[int]:
    return next((int(n) for n, mean, _ in curve if mean >= target), None)


def summarize(dataset: str, full: float, runs: Sequence[RunResult], seeds: int) -> dict[str, Any]:
    """The ``summary.json`` document, exactly the documented keys (the run's settings go to
    ``config.json`` beside it)."""
    by_name: dict[str, list[RunResult]] = {}
    for r in runs:
        by_name.setdefault(r.strategy, []).append(r)
    strategies: dict[str, Any] = {}
    for name, group in by_name.items():
        curve = mean_curve(group)
        strategies[name] = {"curve": curve,
                            "labels_to_target": {f"{t:.2f}": labels_to(curve, t * full) for t in TARGETS}}
    return {"dataset": dataset, "full_label_accuracy": full, "seeds": seeds, "strategies": strategies}


def ratio(summary: dict[str, Any], name: str, target: str) -> Optional[float]:
    mine = summary["strategies"][name]["labels_to_target"][target]
    base = summary["strategies"][RANDOM]["labels_to_target"][target]
    return None if mine is None or not base else mine / base


def table(summary: dict[str, Any]) -> str:
    """Labels to 95% and 98% of full-label accuracy per strategy, and the ratio to random."""
    head = (f"{'strategy':<18} {'to 95%':>8} {'x random':>9} {'to 98%':>8} {'x random':>9}")
    lines = [head, "-" * len(head)]
    for name in summary["strategies"]:
        cells = []
        for t in (f"{t:.2f}" for t in TARGETS):
            n = summary["strategies"][name]["labels_to_target"][t]
            r = ratio(summary, name, t)
            cells.append(f"{n if n is not None else 'not reached':>8} {'' if r is None else f'{r:.2f}x':>9}")
        lines.append(f"{name:<18} " + " ".join(cells))
    lines.append(f"full-label accuracy {summary['full_label_accuracy']:.4f} ({summary['seeds']} seeds, "
                 f"{summary['dataset']})")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Mean test accuracy against labels per strategy, with a +-1 sd band over seeds."""
    require_extra("demo", "plotting")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    full = summary["full_label_accuracy"]
    for name, s in summary["strategies"].items():
        c = np.asarray(s["curve"], dtype=np.float64)
        style = {"color": "black", "ls": "--"} if name == RANDOM else {}
        (line,) = ax.plot(c[:, 0], c[:, 1], lw=1.6, label=name, **style)
        ax.fill_between(c[:, 0], c[:, 1] - c[:, 2], c[:, 1] + c[:, 2], alpha=0.12, color=line.get_color(), lw=0)
    for t in TARGETS:
        ax.axhline(t * full, color="grey", lw=0.8, ls=":")
        ax.text(ax.get_xlim()[1], t * full, f" {t:.0%} of full", va="center", fontsize=8, color="grey")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.xaxis.set_major_formatter(ScalarFormatter())  # 20, 50, 100 rather than 2x10^1
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(max(0.0, min(np.asarray(s["curve"])[:, 1].min() for s in summary["strategies"].values()) - 0.05),
                min(1.0, full + 0.03))
    ax.set_xlabel("labels spent (log scale)")
    ax.set_ylabel("test accuracy of the served model")
    ax.set_title(f"triage simulate: {summary['dataset']} ({summary['seeds']} seeds, mean ± 1 sd)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
