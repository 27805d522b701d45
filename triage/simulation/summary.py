"""Curves over seeds, labels to reach a share of full-label accuracy, the ratio to random
with a bootstrap interval, the table and the plot.

``full_label_accuracy`` is not a point of any curve: per seed, the same bootstrap and v1,
then ONE separate retrain on every other pool label at once (same trainer, same share reserved
for evaluation), scored on the test rows; the mean over seeds. A target is a fraction of it,
and ``labels_to_target`` is the first label count at which the MEAN curve reaches it.

The ratio's interval is a paired bootstrap over seeds: seeds are drawn with replacement (a
seed brings its strategy run, its random twin's run on the same split and its full-label
accuracy), the target and both mean curves are recomputed, and the 2.5th and 97.5th
percentiles of the ratio over ``RESAMPLES`` draws are reported (draws in which either curve
misses the target are left out and counted). With few seeds there are few distinct draws
(3 seeds: 10), so the interval is coarse; it says how much the seeds alone move the ratio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from triage.extras import require_extra
from triage.simulation.replay import Curve, RunResult
from triage.simulation.strategies import RANDOM

TARGETS = (0.95, 0.98)
RESAMPLES = 1000


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


def per_seed_labels_to(runs: Sequence[RunResult], target: float) -> list[Optional[int]]:
    """Each seed's own first label count at ``target`` (None: never reached), by seed."""
    return [next((n for n, acc in r.curve if acc >= target), None) for r in sorted(runs, key=lambda r: r.seed)]


def ratio_interval(mine: Sequence[RunResult], base: Sequence[RunResult], full: Sequence[float], share: float,
                   resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap over seeds of labels-to-target(mine) / labels-to-target(base)."""
    mine = sorted(mine, key=lambda r: r.seed)
    base = sorted(base, key=lambda r: r.seed)
    full_arr = np.asarray(full, dtype=np.float64)
    rng = np.random.default_rng(seed)
    memo: dict[tuple[int, ...], Optional[float]] = {}
    ratios: list[float] = []
    missed = 0
    for _ in range(resamples):
        draw = tuple(sorted(rng.integers(0, len(mine), len(mine)).tolist()))
        if draw not in memo:  # the ratio depends on the multiset of seeds only
            target = share * float(full_arr[list(draw)].mean())
            a = labels_to(mean_curve([mine[i] for i in draw]), target)
            b = labels_to(mean_curve([base[i] for i in draw]), target)
            memo[draw] = None if a is None or not b else a / b
        value = memo[draw]
        if value is None:
            missed += 1
        else:
            ratios.append(value)
    interval = [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))] if ratios else None
    return {"interval": interval, "draws_missing_a_target": missed, "draws": resamples}


def summarize(dataset: str, full: Sequence[float], runs: Sequence[RunResult], seeds: int,
              baselines: Mapping[str, str]) -> dict[str, Any]:
    """The ``summary.json`` document, exactly the documented keys (the run's settings go to
    ``config.json`` beside it). ``full``: full-label accuracy per seed; ``baselines``: the
    random group each strategy is compared with."""
    by_name: dict[str, list[RunResult]] = {}
    for r in runs:
        by_name.setdefault(r.strategy, []).append(r)
    mean_full = float(np.mean(full))
    strategies: dict[str, Any] = {}
    for name, group in by_name.items():
        curve = mean_curve(group)
        entry: dict[str, Any] = {
            "curve": curve,
            "labels_to_target": {f"{t:.2f}": labels_to(curve, t * mean_full) for t in TARGETS},
            "labels_to_target_per_seed": {f"{t:.2f}": per_seed_labels_to(group, t * mean_full) for t in TARGETS}}
        if name in baselines:
            entry["random"] = baselines[name]
        else:
            entry["paired_with"] = [s for s, b in baselines.items() if b == name]
        strategies[name] = entry
    for name, random in baselines.items():
        entry = strategies[name]
        entry["ratio_to_random"] = {}
        for t in TARGETS:
            key = f"{t:.2f}"
            mine, theirs = entry["labels_to_target"][key], strategies[random]["labels_to_target"][key]
            entry["ratio_to_random"][key] = {
                "ratio": None if mine is None or not theirs else mine / theirs,
                **ratio_interval(by_name[name], by_name[random], full, t)}
    return {"dataset": dataset, "full_label_accuracy": mean_full, "seeds": seeds, "strategies": strategies}


def ratio(summary: dict[str, Any], name: str, target: str) -> Optional[float]:
    """A strategy's labels to ``target`` over its random twin's (None for random itself)."""
    found = summary["strategies"][name].get("ratio_to_random", {}).get(target)
    return None if found is None else found["ratio"]


def ratio_text(summary: dict[str, Any], name: str, target: str) -> str:
    """``0.64x (0.55-0.71)`` for a strategy; for random its seeds' own spread."""
    entry = summary["strategies"][name]
    found = entry.get("ratio_to_random", {}).get(target)
    if found is None:
        seen = [n for n in entry["labels_to_target_per_seed"][target] if n is not None]
        missing = len(entry["labels_to_target_per_seed"][target]) - len(seen)
        if not seen:
            return "seeds: none"
        spread = f"seeds {min(seen)}-{max(seen)}, sd {np.std(seen):.0f}"
        return spread + (f", {missing} not" if missing else "")
    if found["ratio"] is None:
        return ""
    interval = found["interval"]
    return f"{found['ratio']:.2f}x" + (f" ({interval[0]:.2f}-{interval[1]:.2f})" if interval else "")


def table(summary: dict[str, Any]) -> str:
    """Labels to 95% and 98% of full-label accuracy per strategy, the ratio to its random twin
    with its 95% bootstrap interval; for random, the spread of its seeds' own points."""
    width = max(18, *(len(n) for n in summary["strategies"]))
    head = f"{'strategy':<{width}} {'to 95%':>8}  {'x random (95% interval)':<26}{'to 98%':>8}  x random (95% interval)"
    lines = [head, "-" * len(head)]
    for name in summary["strategies"]:
        cells = []
        for t in (f"{t:.2f}" for t in TARGETS):
            n = summary["strategies"][name]["labels_to_target"][t]
            cells.append(f"{n if n is not None else 'not reached':>8}  {ratio_text(summary, name, t):<26}")
        lines.append(f"{name:<{width}} " + "".join(cells).rstrip())
    lines.append(f"full-label accuracy {summary['full_label_accuracy']:.4f} ({summary['seeds']} seeds, "
                 f"{summary['dataset']}); each strategy against random on the same labels per retrain")
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
        style = {"color": "black" if name == RANDOM else "grey", "ls": "--"} if name.startswith(RANDOM) else {}
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
