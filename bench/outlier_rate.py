"""Outlier false-positive benchmark: realized outlier rate on clean data against the nominal 1 - q.

For each distribution, reference size n and seed: draw n reference rows, fit the detector, then
draw ``--test-rows`` fresh rows from the same distribution and count the share scored > 1 (every
one is a false outlier). ``old`` is the threshold before issue 12 (fit on 80%, ``np.quantile``
over the held-out 20%), copied below as ``old_fit``; ``new`` is ``OutlierDetector.fit``
(cross-fitted out-of-fold distances, conformal rank ``ceil((n + 1) q)``). Mean and 10th-90th
percentile over seeds.

Distributions (fixed per name, independent of the seed): correlated Gaussians with d = 20 and
d = 64 (covariance A A^T / d + 0.1 I with random A, random means), and a multivariate t with 5
degrees of freedom, d = 20 (heavier tails than the Mahalanobis threshold is used to).

    .venv/bin/python -m bench.outlier_rate            # writes bench/results/outlier_rate.{json,md}
    .venv/bin/python -m bench.outlier_rate --seeds 5 --sizes 200 1000 --out /tmp/outlier
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from triage.scoring.outlier import DEFAULT_FOLDS, OutlierDetector, _ledoit_wolf, min_reference_rows

OUT = Path(__file__).resolve().parent / "results"
Sampler = Callable[[np.random.Generator, int], np.ndarray]


def old_fit(reference: np.ndarray, *, quantile: float = 0.995, seed: int = 0) -> OutlierDetector:
    """The detector fit before issue 12, verbatim: 80/20 split, np.quantile on the 20%."""
    X = np.asarray(reference, dtype=np.float64)
    if X.ndim != 2 or len(X) < 10:
        raise ValueError(f"reference data must be 2-D with >= 10 rows, got shape {X.shape}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    cut = max(int(len(X) * 0.8), len(X) - 5000, 5)
    fit_rows, cal_rows = X[order[:cut]], X[order[cut:]]
    mean = fit_rows.mean(axis=0)
    precision = np.linalg.inv(_ledoit_wolf(fit_rows - mean))
    provisional = OutlierDetector(mean, precision, 1.0, quantile)
    distances = provisional.distance(cal_rows)
    threshold = float(np.quantile(distances, quantile))
    return OutlierDetector(mean, precision, max(threshold, 1e-9), quantile)


def _population(d: int, name_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Cholesky factor of a fixed random covariance A A^T / d + 0.1 I."""
    g = np.random.default_rng(name_seed)
    A = g.normal(size=(d, d))
    return g.normal(scale=3.0, size=d), np.linalg.cholesky(A @ A.T / d + 0.1 * np.eye(d))


def gaussian(d: int, *, name_seed: int) -> Sampler:
    mu, L = _population(d, name_seed)
    return lambda rng, n: mu + rng.standard_normal((n, d)) @ L.T


def student_t(d: int, df: float, *, name_seed: int) -> Sampler:
    mu, L = _population(d, name_seed)

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        w = rng.chisquare(df, size=(n, 1)) / df
        return mu + (rng.standard_normal((n, d)) @ L.T) / np.sqrt(w)

    return draw


DISTRIBUTIONS: dict[str, Sampler] = {
    "gaussian d=20": gaussian(20, name_seed=20),
    "gaussian d=64": gaussian(64, name_seed=64),
    "t(5) d=20": student_t(20, 5.0, name_seed=520),
}


def run(*, sizes: list[int], quantiles: list[float], seeds: int, test_rows: int, folds: int) -> dict:
    cells = []
    for dist_name, draw in DISTRIBUTIONS.items():
        for n in sizes:
            rates: dict[str, dict[str, list[float]]] = {str(q): {"old": [], "new": []} for q in quantiles}
            fit_seconds = {"old": 0.0, "new": 0.0}
            for seed in range(seeds):
                rng = np.random.default_rng([seed, n, zlib.crc32(dist_name.encode())])
                reference = draw(rng, n)
                test = draw(rng, test_rows)
                for q in quantiles:
                    for method in ("old", "new"):
                        t0 = time.perf_counter()
                        if method == "old":
                            det = old_fit(reference, quantile=q, seed=seed)
                        else:
                            det = OutlierDetector.fit(reference, quantile=q, seed=seed, folds=folds)
                        fit_seconds[method] += time.perf_counter() - t0
                        rates[str(q)][method].append(float((det.score(test) > 1.0).mean()))
            for q in quantiles:
                row = {"distribution": dist_name, "n": n, "quantile": q, "nominal": 1 - q,
                       "certified": n >= min_reference_rows(q)}
                for method in ("old", "new"):
                    r = np.array(rates[str(q)][method])
                    row[method] = {"mean": float(r.mean()), "p10": float(np.quantile(r, 0.1)),
                                   "p90": float(np.quantile(r, 0.9)), "max": float(r.max()),
                                   "over_2x_nominal": float((r > 2 * (1 - q)).mean()), "rates": r.tolist()}
                cells.append(row)
            print(f"{dist_name:>14} n={n:>6}: fit old {fit_seconds['old']:.2f}s new {fit_seconds['new']:.2f}s",
                  flush=True)
    return {"seeds": seeds, "test_rows": test_rows, "folds": folds, "sizes": sizes,
            "quantiles": quantiles, "cells": cells}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render_markdown(result: dict) -> str:
    quantiles = result["quantiles"]
    head = "| data | reference rows | " + " | ".join(
        f"q={q}: before | q={q}: after" for q in quantiles) + " |"
    rows = [head, "|---" * (2 + 2 * len(quantiles)) + "|"]
    by_key = {(c["distribution"], c["n"], c["quantile"]): c for c in result["cells"]}
    for dist in dict.fromkeys(c["distribution"] for c in result["cells"]):
        for n in result["sizes"]:
            cells = []
            for q in quantiles:
                c = by_key[(dist, n, q)]
                for method in ("old", "new"):
                    s = c[method]
                    mark = "" if method == "old" or c["certified"] else " ⚠"
                    cells.append(f"{_pct(s['mean'])} ({_pct(s['p10'])}–{_pct(s['p90'])}){mark}")
            rows.append(f"| {dist} | {n:,} | " + " | ".join(cells) + " |")
    nominal = ", ".join(f"{_pct(1 - q)} at q={q} (minimum {min_reference_rows(q)} rows)" for q in quantiles)
    rows.append(
        f"\nRealized false-outlier rate on {result['test_rows']:,} fresh clean rows per run: mean "
        f"(10th–90th percentile) over {result['seeds']} seeds. Nominal: {nominal}. "
        f"After = {result['folds']}-fold cross-fitted conformal threshold; ⚠ = reference too small to "
        f"certify q (flagged, warned, `triage_outlier_threshold_certified` 0).")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 450, 1000, 10000])
    p.add_argument("--quantiles", type=float, nargs="+", default=[0.995, 0.99])
    p.add_argument("--test-rows", type=int, default=100_000, help="fresh clean rows per run")
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    result = run(sizes=args.sizes, quantiles=args.quantiles, seeds=args.seeds,
                 test_rows=args.test_rows, folds=args.folds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "outlier_rate.json").write_text(json.dumps(result, indent=2))
    md = render_markdown(result)
    (args.out / "outlier_rate.md").write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
