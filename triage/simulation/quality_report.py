"""``triage simulate --annotators``: every label-quality arm over the same seeds and budget,
then ``summary.json`` with ``label_quality``, the table and the plot.

Intervals are paired bootstraps over seeds (a seed brings every arm's run on the same split,
stream and annotator answers): the 2.5th-97.5th percentiles of the mean over ``RESAMPLES``
draws of seeds with replacement, for each arm's figures and for its difference from
``latest_wins``. An arm *pays* when its label error rate is lower than latest-wins' with the
whole interval of the difference below 0 and its mean final accuracy is at least as high.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import as_completed
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

import numpy as np

from triage.settings import Settings
from triage.simulation.annotators import AnnotatorPanel
from triage.simulation.datasets import split
from triage.simulation.quality import LATEST_WINS, QualityArm, QualityRun, run_arm
from triage.simulation.replay import ReplayConfig, RunResult
from triage.simulation.runner import _executor, _full
from triage.simulation.strategies import Strategy
from triage.simulation.summary import TARGETS, labels_to, mean_curve, per_seed_labels_to, plot

RESAMPLES = 1000
POLICY = Strategy("shipped-policy", {}, "the shipped acquisition and review order")


def _arm_job(arm: QualityArm, seed: int, X: np.ndarray, y: np.ndarray, test_fraction: float, cfg: ReplayConfig,
             flat: dict[str, Any], panel: AnnotatorPanel) -> QualityRun:
    return run_arm(split(X, y, seed, test_fraction), POLICY, seed, cfg, flat, arm, panel)


def interval(values: Sequence[float], resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
    """95% bootstrap interval of the mean of ``values`` (one per seed)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return [float(v.mean()), float(v.mean())] if len(v) else [float("nan")] * 2
    draws = np.random.default_rng(seed).integers(0, len(v), (resamples, len(v)))
    means = v[draws].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def _figure(values: Sequence[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "interval": interval(values), "per_seed": [float(v) for v in values]}


def summarize_quality(dataset: str, full: Sequence[float], runs: Sequence[QualityRun], seeds: int,
                      arms: Sequence[QualityArm], panel: AnnotatorPanel) -> dict[str, Any]:
    by_arm = {a.name: sorted((r for r in runs if r.arm == a.name), key=lambda r: r.seed) for a in arms}
    mean_full = float(np.mean(full))
    base = by_arm[LATEST_WINS]
    strategies: dict[str, Any] = {}
    quality: dict[str, Any] = {}
    for arm in arms:
        group = by_arm[arm.name]
        curves = [RunResult(arm.name, r.seed, r.curve) for r in group]
        curve = mean_curve(curves)
        strategies[arm.name] = {
            "curve": curve,
            "labels_to_target": {f"{t:.2f}": labels_to(curve, t * mean_full) for t in TARGETS},
            "labels_to_target_per_seed": {f"{t:.2f}": per_seed_labels_to(curves, t * mean_full) for t in TARGETS}}
        err = [r.label_error_rate for r in group]
        acc = [r.final_accuracy for r in group]
        spent = [r.spent for r in group]
        entry: dict[str, Any] = {
            "label_error_rate": float(np.mean(err)),
            "final_accuracy": float(np.mean(acc)),
            "labels_spent": int(max(spent)) if min(spent) == max(spent) else float(np.mean(spent)),
            "description": arm.description, "settings": arm.settings(),
            "figures": {"label_error_rate": _figure(err), "final_accuracy": _figure(acc),
                        "labels_spent": _figure(spent),
                        "samples_labelled": _figure([r.samples_labelled for r in group]),
                        "multi_labelled": _figure([r.multi_labelled for r in group]),
                        "stored_labels": _figure([r.stored_labels for r in group])},
            "labels_to_target": {f"{t:.2f}": reach(per_seed_labels_to(curves, t * mean_full)) for t in TARGETS},
            "relabel": {k: int(sum(getattr(r, k) for r in group)) for k in
                        ("flagged", "flagged_wrong", "relabel_sent", "relabel_changed", "relabel_fixed",
                         "tiebreaks_asked", "tiebreaks_answered", "held")},
            "agreement": _mean_or_none([r.agreement for r in group]),
            "annotator_accuracy": {name: {
                "estimated": _mean_or_none([r.annotator_accuracy[name]["estimated"] for r in group]),
                "true": group[0].annotator_accuracy[name]["true"]} for name in panel.names},
        }
        if arm.name != LATEST_WINS:
            d_err = [a.label_error_rate - b.label_error_rate for a, b in zip(group, base)]
            d_acc = [a.final_accuracy - b.final_accuracy for a, b in zip(group, base)]
            entry["vs_latest_wins"] = {"label_error_rate": _figure(d_err), "final_accuracy": _figure(d_acc)}
            entry["pays"] = bool(interval(d_err)[1] < 0 and np.mean(d_acc) >= 0 and max(spent) <= max(
                r.spent for r in base))
        quality[arm.name] = entry
    return {"dataset": dataset, "full_label_accuracy": mean_full, "seeds": seeds,
            "annotators": {"names": panel.names, "noise": list(panel.noise) or None,
                           "confusion": bool(panel.confusion),
                           "true_accuracy": dict(zip(panel.names, panel.true_accuracy(["x"]) if panel.noise
                                                     else [None] * panel.size))},
            "strategies": strategies, "label_quality": quality}


def reach(per_seed: Sequence[Optional[int]]) -> dict[str, Any]:
    """Labels spent to reach a target, over seeds: ``reached`` of ``seeds`` got there; mean and
    95% interval over the seeds that did (None when none did: "not reached")."""
    got = [float(v) for v in per_seed if v is not None]
    return {"reached": len(got), "seeds": len(per_seed), "per_seed": list(per_seed),
            "mean": float(np.mean(got)) if got else None, "interval": interval(got) if got else None}


def reach_text(r: dict[str, Any]) -> str:
    """``370 (350 to 390), 8/8`` or ``not reached``."""
    if not r["reached"]:
        return "not reached"
    lo, hi = r["interval"]
    return f"{r['mean']:.0f} ({lo:.0f} to {hi:.0f}), {r['reached']}/{r['seeds']}"


def _mean_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    seen = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(seen)) if seen else None


def _pm(fig: dict[str, Any], scale: float = 100.0, signed: bool = False) -> str:
    lo, hi = fig["interval"]
    fmt = "+.1f" if signed else ".1f"
    return f"{fig['mean'] * scale:{fmt}} ({lo * scale:{fmt}} to {hi * scale:{fmt}})"


def quality_table(summary: dict[str, Any]) -> str:
    """Per arm: label error rate, final accuracy (%), each with its difference from
    latest_wins and the 95% interval over seeds; labels spent, samples labelled, labels to 95%
    and 98% of full-label accuracy (the mean curve; - when not reached within the budget)."""
    q = summary["label_quality"]
    width = max(12, *(len(n) for n in q))
    head = (f"{'arm':<{width}} {'label error %':<20} {'vs latest_wins':<22} {'accuracy %':<20} "
            f"{'vs latest_wins':<22} {'labels':>6} {'samples':>7} {'to 95% (seeds)':<24}  {'to 98% (seeds)':<24}  pays")
    lines = [head, "-" * len(head)]
    for name, e in q.items():
        f, vs = e["figures"], e.get("vs_latest_wins")
        reached = "  ".join(f"{reach_text(e['labels_to_target'][t]):<24}" for t in ("0.95", "0.98"))
        lines.append(
            f"{name:<{width}} {_pm(f['label_error_rate']):<20} {(_pm(vs['label_error_rate'], signed=True) if vs else ''):<22} "
            f"{_pm(f['final_accuracy']):<20} {(_pm(vs['final_accuracy'], signed=True) if vs else ''):<22} "
            f"{e['labels_spent']:>6} {f['samples_labelled']['mean']:>7.0f} {reached}  "
            f"{'' if 'pays' not in e else ('yes' if e['pays'] else 'no')}")
    noise = summary["annotators"]["noise"]
    lines.append(f"{summary['seeds']} seeds, {summary['dataset']}, annotators "
                 f"{'noise ' + ','.join(f'{p:g}' for p in noise) if noise else 'by confusion matrix'}; "
                 f"full-label accuracy {summary['full_label_accuracy']:.4f}; intervals: 95% bootstrap over seeds")
    return "\n".join(lines)


def simulate_quality(dataset: str, X: np.ndarray, y: np.ndarray, arms: Sequence[QualityArm], panel: AnnotatorPanel,
                     seeds: int, cfg: ReplayConfig, base: Settings, *, jobs: int, test_fraction: float,
                     report_dir: Path, out: Optional[TextIO] = None, progress: Optional[TextIO] = None
                     ) -> dict[str, Any]:
    """Every arm on every seed to the same budget of human actions; report as module doc."""
    out = out if out is not None else sys.stdout
    progress = progress if progress is not None else sys.stderr
    started = time.monotonic()
    pool = len(X) - int(round(len(X) * test_fraction))
    if cfg.budget is None:
        cfg = replace(cfg, budget=max(pool // 2, cfg.initial_labels + 1))
    flat = base.flat()
    runs: list[QualityRun] = []
    with _executor(jobs) as executor:
        fulls = [executor.submit(_full, seed, X, y, test_fraction, cfg, flat) for seed in range(seeds)]
        # an arm whose settings another arm already has (shipped, when the defaults are one step) runs once
        same = {a.name: next(b.name for b in arms if b.settings() == a.settings()) for a in arms}
        jobs_ = {executor.submit(_arm_job, arm, seed, X, y, test_fraction, cfg, flat, panel): (arm.name, seed)
                 for seed in range(seeds) for arm in arms if same[arm.name] == arm.name}
        for n, f in enumerate(as_completed(jobs_), 1):
            done = f.result()
            runs += [done] + [replace(done, arm=a) for a, b in same.items() if b == done.arm and a != b]
            if progress.isatty():
                progress.write(f"\r\x1b[2K{n}/{len(jobs_)} runs ({jobs_[f][0]}, seed {jobs_[f][1]})")
                progress.flush()
        full = [f.result() for f in fulls]
    if progress.isatty():
        progress.write("\n")
    summary = summarize_quality(dataset, full, runs, seeds, arms, panel)
    report_dir.mkdir(parents=True, exist_ok=True)
    summary_path, plot_path = report_dir / "summary.json", report_dir / "learning_curves.png"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    config = {"budget": cfg.budget, "initial_labels": cfg.initial_labels, "round_size": cfg.round_size,
              "labels_per_round": cfg.labels_per_round, "retrain_growth": cfg.retrain_growth,
              "test_fraction": test_fraction, "jobs": jobs, "rows": int(len(X)), "features": int(X.shape[1]),
              "classes": int(len(np.unique(y))), "full_label_accuracy_per_seed": full,
              "arms": {a.name: {"settings": a.settings(), "description": a.description} for a in arms},
              "runs": [{k: v for k, v in asdict(r).items() if k != "curve"} for r in runs],
              "seconds": round(time.monotonic() - started, 1)}
    (report_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    plot(summary, plot_path)
    out.write(quality_table(summary) + "\n")
    out.write(f"report: {summary_path} and {plot_path} ({config['seconds']:.0f} s)\n")
    return summary
