"""The demo report: summary.json and a plot of held-out accuracy against labels used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from triage.extras import require_extra

ACTIVE_STATUSES = ("current", "previous")  # versions the loop actually served


def write_report(report_dir: Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``accuracy_vs_labels.png`` under ``report_dir``; returns both paths."""
    report_dir.mkdir(parents=True, exist_ok=True)
    summary_path = report_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True))
    plot_path = report_dir / "accuracy_vs_labels.png"
    baseline = summary.get("baseline", {})
    plot_accuracy(plot_path, summary["model_versions"], baseline.get("model_versions", []), baseline.get("seeds"))
    return summary_path, plot_path


def _points(rows: list[dict[str, Any]], *keys: str) -> list[tuple[float, ...]]:
    """(labels_used, *keys) per row that has them all, sorted by labels used."""
    return sorted((r["labels_used"], *(r[k] for k in keys)) for r in rows
                  if all(r.get(k) is not None for k in keys))


def plot_accuracy(path: Path, active: list[dict[str, Any]], baseline: list[dict[str, Any]],
                  seeds: Optional[int] = None) -> None:
    """Held-out accuracy against labels used: the active loop's promoted versions as a line (its
    rejected candidates as crosses), random selection's mean as a dashed line with its min-max
    band over ``seeds`` draws shaded. A summary without a band (one old-style draw) plots the line only."""
    require_extra("demo", "plotting")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    random_color, active_color = "tab:gray", "tab:blue"
    band = _points(baseline, "accuracy_min", "accuracy_max")
    if band:
        # Drawn first so the lines sit on top of it.
        ax.fill_between([p[0] for p in band], [p[1] for p in band], [p[2] for p in band], color=random_color,
                        alpha=0.25, linewidth=0, label=f"random: min-max over {seeds or '?'} seeds")
    mean = _points(baseline, "accuracy")
    if mean:
        name = f"random: mean of {seeds} seeds" if seeds else "random baseline"
        ax.plot([p[0] for p in mean], [p[1] for p in mean], color=random_color, linestyle="--", marker=".",
                label=name)
    served = [r for r in active if r.get("status", "current") in ACTIVE_STATUSES]
    curve = _points(served, "accuracy")
    if curve:
        ax.plot([p[0] for p in curve], [p[1] for p in curve], color=active_color, marker="o",
                label="active (uncertainty + outliers), promoted versions")
    rejected = _points([r for r in active if r.get("status") == "rejected"], "accuracy")
    if rejected:
        ax.scatter([p[0] for p in rejected], [p[1] for p in rejected], color=active_color, marker="x", alpha=0.6,
                   label="active: rejected candidate")
    ax.set_xlabel("labels used (initial + human)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("triage demo: accuracy against labels")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
