"""Which holdout and calibration share should ship? Coverage and accuracy of each, same seeds.

Candidates: ``--holdout-fraction`` 0.2 or 0.3 (more certifying rows, fewer training rows) x
``--calibration-fraction`` 0.5 or 0.2 (share of the holdout that fits the calibrator; the rest
certifies). Per seed and holdout, `bundles.train_initial` trains once at the `triage train`
defaults (the calibration share does not change the model); each calibration share then fits
routing on that model's holdout (`fit_routing`, as `triage train` does) and routes the test rows
by the certified threshold alone (outliers not removed). MAPIE's controller runs on each
configuration's certifying rows, as in ``bench.risk_control``.

Tasks: ``benchmark`` (``bench.risk_control``'s task, 2,500 labelled and 40,000 test rows per
seed) and ``digits`` (the `triage train` / `triage demo` dataset: 1,297 labelled and 500 test
rows per seed, drawn from scikit-learn's 1,797).

    .venv/bin/python -m bench.risk_defaults --task benchmark   # writes bench/results/risk_defaults_<task>.{json,md}
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from sklearn.datasets import load_digits, make_classification

from bench.risk_control import (ALPHA, DELTA, OUT, POOL, TASK, TEST, TRAIN, holdout_and_test, mapie_point, policy,
                                realized)
from triage.lifecycle.bundles import train_initial
from triage.lifecycle.registry import Registry
from triage.policies.fit import fit_routing
from triage.settings import RetrainSettings

HOLDOUTS = (0.2, 0.3)
CALIBRATION_SHARES = (0.5, 0.2)
SIZES = {"benchmark": (TRAIN, TEST), "digits": (1_297, 500)}


def pool(task: str) -> tuple[np.ndarray, np.ndarray]:
    if task == "digits":
        X, y = load_digits(return_X_y=True)
    else:
        X, y = make_classification(n_samples=POOL, **TASK)
    return X.astype(np.float64), y.astype(str)


def name(holdout: float, share: float) -> str:
    return f"holdout {holdout}, calibration share {share}"


def run_seed(seed: int, X_pool: np.ndarray, y_pool: np.ndarray, train: int, test: int) -> dict[str, dict[str, Any]]:
    rows = np.random.default_rng(seed).choice(len(X_pool), train + test, replace=False)
    X, y = X_pool[rows[:train]], y_pool[rows[:train]]
    X_test, y_test_s = X_pool[rows[train:]], y_pool[rows[train:]]
    out: dict[str, dict[str, Any]] = {}
    for holdout in HOLDOUTS:
        with tempfile.TemporaryDirectory() as tmp:
            reg = Registry(Path(tmp) / "registry")
            manifest = train_initial(X, y, reg, retrain=RetrainSettings(holdout_fraction=holdout), policy=policy(seed),
                                     outlier_quantile=0.995, progress=lambda m: None)
            _, raw_hold, y_hold, raw_test, y_test = holdout_and_test(reg, X_test, y_test_s)
        for share in CALIBRATION_SHARES:
            pol = policy(seed, calibration_fraction=share)
            routing = fit_routing(raw_hold, y_hold, pol)
            point = realized(routing, raw_test, y_test, pol.acquisition)
            point["family"] = manifest["family"]
            point["calibration"] = routing["calibration_report"]["kind"]
            for fwer in ("bonferroni_holm", "fixed_sequence"):
                mapie = mapie_point(routing, raw_hold, y_hold, raw_test, y_test, seed, fwer, pol)
                point[f"mapie_{fwer}_coverage"] = mapie["coverage"]
            out[name(holdout, share)] = point
    return out


def summarize(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    summary = {}
    base = name(HOLDOUTS[0], CALIBRATION_SHARES[0])
    for key in runs[0]:
        pts = [r[key] for r in runs]
        cov = np.array([p["coverage"] for p in pts])
        acc = np.array([p["accuracy"] for p in pts])
        diff = acc - np.array([r[base]["accuracy"] for r in runs])  # paired with the old default
        summary[key] = {
            "coverage_mean": float(cov.mean()), "coverage_min": float(cov.min()), "coverage_max": float(cov.max()),
            "zero_coverage_seeds": int((cov == 0).sum()),
            "error_mean": float(np.mean([p["error"] for p in pts])), "error_max": float(max(p["error"] for p in pts)),
            "seeds_above_alpha": int(sum(p["error"] > ALPHA for p in pts)),
            "accuracy_mean": float(acc.mean()), "accuracy_sd": float(acc.std(ddof=1)),
            "accuracy_diff_mean": float(diff.mean()), "accuracy_diff_sd": float(diff.std(ddof=1)),
            "certifying_rows": int(pts[0]["certifying_rows"]),
            "mapie_bonferroni_holm_coverage": float(np.mean([p["mapie_bonferroni_holm_coverage"] for p in pts])),
            "mapie_fixed_sequence_coverage": float(np.mean([p["mapie_fixed_sequence_coverage"] for p in pts])),
            "calibration": {k: [p["calibration"] for p in pts].count(k) for k in sorted({p["calibration"] for p in pts})},
            "seeds": len(pts),
        }
    return summary


def markdown(task: str, summary: dict[str, dict[str, Any]], seeds: int) -> str:
    train, test = SIZES[task]
    lines = [f"# Holdout and calibration share: {task} task, alpha {ALPHA}, delta {DELTA}, {seeds} seeds", "",
             f"{train:,} labelled and {test:,} test rows per seed. Accuracy = the served model's (after its "
             "calibrator) on the test rows; its difference is paired by seed with holdout 0.2 / share 0.5.", "",
             "| configuration | certifying rows | coverage mean [min, max] (seeds at 0) | error among accepted mean [max] "
             "| seeds > alpha | accuracy mean (sd) | accuracy - old default, mean (sd) | MAPIE coverage: holm, fixed seq. |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, r in summary.items():
        lines.append(
            f"| {key} | {r['certifying_rows']} | {r['coverage_mean']:.3f} [{r['coverage_min']:.3f}, "
            f"{r['coverage_max']:.3f}] ({r['zero_coverage_seeds']}) | {r['error_mean']:.4f} [{r['error_max']:.4f}] | "
            f"{r['seeds_above_alpha']}/{r['seeds']} | {r['accuracy_mean']:.4f} ({r['accuracy_sd']:.4f}) | "
            f"{r['accuracy_diff_mean']:+.4f} ({r['accuracy_diff_sd']:.4f}) | "
            f"{r['mapie_bonferroni_holm_coverage']:.3f}, {r['mapie_fixed_sequence_coverage']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=sorted(SIZES), default="benchmark")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    X_pool, y_pool = pool(args.task)
    runs = []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        runs.append(run_seed(seed, X_pool, y_pool, *SIZES[args.task]))
        print(f"seed {seed} ({time.perf_counter() - t0:.0f} s): " + "; ".join(
            f"{k}: cov {v['coverage']:.3f} acc {v['accuracy']:.4f}" for k, v in runs[-1].items()), flush=True)
    summary = summarize(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"risk_defaults_{args.task}"
    stem.with_suffix(".json").write_text(json.dumps({"task": args.task, "summary": summary, "runs": runs}, indent=2))
    text = markdown(args.task, summary, args.seeds)
    stem.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
