"""The demo report: summary.json and a plot of held-out accuracy against labels used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(report_dir: Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    summary_path = report_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True))
    plot_path = report_dir / "accuracy_vs_labels.png"
    plot_accuracy(plot_path, {
        "active (uncertainty + outliers)": summary["model_versions"],
        "random baseline": summary["baseline"]["model_versions"],
    })
    return summary_path, plot_path


def plot_accuracy(path: Path, series: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, points in series.items():
        pts = sorted((p["labels_used"], p["accuracy"]) for p in points if p.get("accuracy") is not None)
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name)
    ax.set_xlabel("labels used (initial + human)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("triage demo: accuracy against labels")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
